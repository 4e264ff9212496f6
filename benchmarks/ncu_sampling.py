"""One fused sampling call per mode at bs 512 x vocab 128256, for Nsight Compute:

    ncu -k regex:masked_sample --section SpeedOfLight --section Occupancy python -m benchmarks.ncu_sampling
"""
import torch

from sgl_lang.kernels.masked_sampling import masked_sample

bs, vocab = 512, 128256
g = torch.Generator(device="cuda").manual_seed(0)
logits = torch.randn(bs, vocab, device="cuda", generator=g) * 4
mask = torch.randint(-2**31, 2**31 - 1, (bs, (vocab + 31) // 32), dtype=torch.int32, device="cuda", generator=g)
keys = torch.randint(-2**31, 2**31 - 1, (bs, 2), dtype=torch.int32, device="cuda", generator=g)
for t, k, p in ((0.0, 0, 1.0), (0.8, 0, 1.0), (0.8, 0, 0.9)):
    args = [torch.full((bs,), v, dtype=dt, device="cuda") for v, dt in
            ((t, torch.float32), (k, torch.int32), (p, torch.float32), (0.0, torch.float32))]
    masked_sample(logits, mask, *args, keys, may_filter=p < 1)
torch.cuda.synchronize()
