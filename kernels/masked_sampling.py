"""masked_sample: grammar bitmask + temperature + top-k/top-p/min-p + the draw, fused per row.

Exact semantics, per row b (x = logits[b] as float32, V = vocab size; the runtime sampler's):
    if bitmask given and has_mask[b]:  x[j] = -inf wherever bit j of bitmask[b] is 0
    allowed = x > -inf;  lse = logsumexp(x)   (the Triton kernel: x > -1e30, which no real logit
                                              is at or below; a row with nothing above is dead)
    if not any(allowed): token = dead_token, logprob = -inf
    elif temperature[b] <= 0 or is_greedy[b]:  token = argmax(x)           (first index on ties)
    else:
        s = x * (1 / temperature[b])          (the reciprocal correctly rounded; as the sampler)
        top-k (0 < top_k[b] < V):  s[j] = -inf where s[j] < k-th largest s
        top-p (top_p[b] < 1):      on softmax of what top-k kept, in descending order, keep a
                                   token if the mass strictly above its value is < top_p
                                   (the largest value is always kept)
        min-p (min_p[b] > 0):      s[j] = -inf where s[j] < max(s) + log(min_p[b])
        token = sampling_chain.chain_draw: inverse-CDF draws on softmax(s) with rejection
                until one lands in what the filters keep (an exact draw from the filtered
                softmax; an unfiltered row takes its first draw)
    logprob = x[token] - lse        (temperature 1, before the filters, as the sampler returns)
The uniforms come from sampling_noise.uniform_noise, so a row draws the same token as
runtime/sampler.py's torch path from the same noise key (up to float rounding at cumulative-mass
and filter boundaries).

Triton on CUDA (one launch; sampling_kernel.py tells the passes), the torch reference elsewhere.
"""
from __future__ import annotations

import os
from typing import NamedTuple, Optional

import torch

from .bitmask import unpack_bitmask
from .sampling_chain import LANES, chain_draw

try:
    import triton
    from .sampling_kernel import masked_sample_kernel
    from .sampling_lists import NUM_LEVELS
    from .sampling_search import NUM_PIVOTS, RECORD
except ImportError:  # CPU-only installs serve through the reference
    triton = None
try:
    from triton import knobs as _knobs
except ImportError:  # older Triton: every call goes through the JIT launcher
    _knobs = None

_NEG_INF = float("-inf")
MAX_SPLITS = 64  # programs per row at bs 1 (a power of two)
MIN_SPLIT_LEN = 2048  # tokens per program, at least, when a row is split
# launch shape per specialisation and row split: (tokens per tile (sampling_records.py), warps
# per program[, registers per thread cap]). Measured (bench_sampling_kernel --sweep, H200,
# 2026-11-28, vocab 128k, tenth session): whole rows (bs 512) greedy 72.2 µs at 2048 x 4 against
# 75.5-98 at the others; temperature 82.7 at 1024 x 8 capped at 64 registers (four programs per
# SM, so all 512 rows resident) against 87.4 uncapped and 110 at 2048 x 4; the filters kernel
# 186-187 at 2048 x 4 (254 registers, two programs per SM) against 201-350 at 1024 x 4 / 8 and
# capped shapes (their spills cost more than the occupancy gains). Split rows (bs 1): 1024 x 4
# best in every mode. Rows in two programs ("split2", bs 33-66; bs 64 sweep): one program per SM
# streams 64k tokens and needs more loads in flight: greedy 19.5 µs at 4096 x 8 vs 40.4, temperature
# 21.9 at 4096 x 16 vs 40.3, filters 84.3 vs 112-114 (the same shapes are slower at bs 1).
LAUNCH = {("greedy", "whole"): (2048, 4), ("sample", "whole"): (1024, 8, 64), ("filters", "whole"): (2048, 4),
          ("greedy", "split"): (1024, 4), ("sample", "split"): (1024, 4), ("filters", "split"): (1024, 4),
          ("greedy", "split2"): (4096, 8), ("sample", "split2"): (4096, 16), ("filters", "split2"): (4096, 16)}


# Pass 1 on [rows, words, 32] tiles: a bitmask word loaded once per thread instead of once per
# token (sampling_kernel.py), whenever a program has >= 32 lanes (whole rows). On the H200 at
# bs 512 x 128k: greedy 72.8 µs against 106 on [rows, lanes] tiles, temperature 93.1 against
# 118 (GPU tests pass, tenth session, before the later pass-1 changes). SGL_LANG_WORD_TILES=0
# turns it off.
WORD_TILES = os.environ.get("SGL_LANG_WORD_TILES", "1") != "0"


class SampledTokens(NamedTuple):
    token_ids: torch.Tensor  # [bs] int64
    logprobs: torch.Tensor  # [bs] float32: log-softmax of x (temperature 1) at the token


def masked_sample_ref(logits, bitmask, temperature, top_k, top_p, min_p, noise_keys,
                      has_mask=None, is_greedy=None, dead_token: int = -1) -> SampledTokens:
    """Plain-torch reference; same arguments and result as masked_sample."""
    bs, vocab = logits.shape
    x = logits.float()  # [bs, V]
    if bitmask is not None:
        blocked = ~unpack_bitmask(bitmask, vocab)  # [bs, V]
        if has_mask is not None:
            blocked &= has_mask[:, None]
        x = x.masked_fill(blocked, _NEG_INF)
    temperature = temperature.reshape(bs).float()
    greedy = temperature <= 0  # [bs]
    if is_greedy is not None:
        greedy |= is_greedy
    inv_t = torch.where(greedy, torch.ones_like(temperature), temperature).reciprocal()  # [bs]
    s = x * inv_t[:, None]  # [bs, V]
    k = top_k.long()
    top_k_on = (k > 0) & (k < vocab)  # [bs]
    ordered = s.sort(dim=1, descending=True).values  # [bs, V]
    kth = ordered.gather(1, (k.clamp(1, vocab) - 1)[:, None])  # [bs, 1]
    f = s.masked_fill(top_k_on[:, None] & (s < kth), _NEG_INF)  # [bs, V]: what the filters keep
    top_p_on = top_p < 1  # [bs]
    ordered = f.sort(dim=1, descending=True).values
    probs = (ordered - f.logsumexp(dim=1, keepdim=True)).exp()  # top-k renormalised
    mass_before = probs.cumsum(dim=1) - probs  # exclusive
    num_keep = (mass_before < top_p[:, None]).sum(dim=1, keepdim=True).clamp_(min=1)
    f = f.masked_fill(top_p_on[:, None] & (f < ordered.gather(1, num_keep - 1)), _NEG_INF)
    floor = f.max(dim=1, keepdim=True).values + min_p.float().log()[:, None]  # log 0 = -inf
    f = f.masked_fill(f < floor, _NEG_INF)
    dead = ~(x > _NEG_INF).any(dim=1)  # [bs]
    drawn = chain_draw(s.masked_fill(dead[:, None], 0.0), (f > _NEG_INF) | dead[:, None], noise_keys,
                       top_k_on | top_p_on | (min_p > 0))
    token = torch.where(greedy, x.argmax(dim=1), drawn)
    lse = x.logsumexp(dim=1)  # [bs]
    logprob = x.gather(1, token[:, None]).squeeze(1) - lse
    token = token.masked_fill(dead, dead_token)
    return SampledTokens(token, logprob.masked_fill(dead, _NEG_INF))


def _check_rows(name: str, t, dtypes: tuple, bs: int, device) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name}: expected dtype {' or '.join(map(str, dtypes))}, got {t.dtype}")
    if t.numel() != bs or (t.dim() > 1 and t.stride(0) != 1 and bs > 1):
        raise ValueError(f"{name}: expected shape [{bs}], got {list(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name}: expected device {device}, got {t.device}")


_F32 = (torch.float32,)
_INT = (torch.int32, torch.int64)


def _validate(logits, bitmask, temperature, top_k, top_p, min_p, noise_keys, has_mask, is_greedy):
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        got = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits: expected a 2-D tensor [bs, vocab], got {got}")
    if logits.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"logits: expected float32, bfloat16 or float16, got {logits.dtype}")
    if logits.stride(1) != 1:
        raise ValueError("logits: expected contiguous rows (stride 1 along vocab)")
    bs, vocab = logits.shape
    device = logits.device
    if bitmask is not None:
        width = (vocab + 31) // 32
        if bitmask.dtype != torch.int32:
            raise TypeError(f"bitmask: expected dtype torch.int32, got {bitmask.dtype}")
        if bitmask.shape != (bs, width):
            raise ValueError(f"bitmask: expected shape {[bs, width]}, got {list(bitmask.shape)}")
        if bitmask.device != device:
            raise ValueError(f"bitmask: expected device {device}, got {bitmask.device}")
        if bitmask.stride(1) != 1:
            raise ValueError("bitmask: expected contiguous rows")
    elif has_mask is not None:
        raise ValueError("has_mask marks constrained rows but bitmask is None")
    if has_mask is not None:
        _check_rows("has_mask", has_mask, (torch.bool,), bs, device)
    if is_greedy is not None:
        _check_rows("is_greedy", is_greedy, (torch.bool,), bs, device)
    _check_rows("temperature", temperature, _F32, bs, device)
    _check_rows("top_k", top_k, _INT, bs, device)
    _check_rows("top_p", top_p, _F32, bs, device)
    _check_rows("min_p", min_p, _F32, bs, device)
    if noise_keys.dtype != torch.int32 or noise_keys.shape != (bs, 2) or not noise_keys.is_contiguous():
        raise ValueError(f"noise_keys: expected a contiguous int32 tensor [{bs}, 2], got "
                         f"{noise_keys.dtype} {list(noise_keys.shape)}")
    if noise_keys.device != device:
        raise ValueError(f"noise_keys: expected device {device}, got {noise_keys.device}")


class _Workspace(NamedTuple):
    partials: torch.Tensor  # [2 * num_sms * RECORD] float32: per-pass records of split rows
    sync: torch.Tensor  # [num_sms, 2] int32: arrival and departure counters, zero between calls
    num_sms: int


_WORKSPACES: dict = {}


def _workspace(device: torch.device) -> _Workspace:
    ws = _WORKSPACES.get(device)
    if ws is None:
        num_sms = (torch.cuda.get_device_properties(device).multi_processor_count
                   if device.type == "cuda" else 1)
        ws = _Workspace(torch.empty(2 * num_sms * RECORD, dtype=torch.float32, device=device),
                        torch.zeros(num_sms, 2, dtype=torch.int32, device=device), num_sms)
        _WORKSPACES[device] = ws
    return ws


def num_splits(bs: int, vocab: int, num_sms: int) -> int:
    """Programs per row: the largest power of two <= MAX_SPLITS with bs * splits <= num_sms
    (all resident, so the per-row barrier cannot deadlock) and >= MIN_SPLIT_LEN tokens each."""
    splits = 1
    while (splits * 2 <= MAX_SPLITS and bs * splits * 2 <= num_sms
           and vocab >= splits * 2 * MIN_SPLIT_LEN):
        splits *= 2
    return splits


def masked_sample(logits: torch.Tensor, bitmask: Optional[torch.Tensor], temperature: torch.Tensor,
                  top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor,
                  noise_keys: torch.Tensor, has_mask: Optional[torch.Tensor] = None,
                  is_greedy: Optional[torch.Tensor] = None, dead_token: int = -1,
                  may_filter: bool = True, may_sample: bool = True, use_triton: Optional[bool] = None,
                  splits: Optional[int] = None) -> SampledTokens:
    """Draw one token per row; see the module docstring for the exact semantics.

    logits [bs, V] float32/bfloat16/float16, rows contiguous; bitmask [bs, ceil(V/32)] int32 or
    None; has_mask [bs] bool (None: every row uses the bitmask); temperature [bs] (or [bs, 1])
    float32, 0 = greedy; is_greedy [bs] bool or None (True also means greedy); top_k [bs] int32
    or int64 (<= 0 or >= V: off); top_p, min_p [bs] float32 (1 and 0: off); noise_keys [bs, 2]
    int32 (sampling_noise.key_words of the request's seed and step). Parameter tensors are used
    as they are: no copies, no host syncs; a call is one kernel launch.
    may_filter=False promises that no row has top-k, top-p or min-p on (the caller knows it on
    the host, e.g. SamplingBatchInfo.need_top_k / need_top_p / need_min_p): a leaner kernel, one
    pass per row; rows that break the promise are sampled without their filters.
    may_sample=False promises that every row is greedy (SamplingBatchInfo.is_all_greedy): no
    sampling code is compiled in; rows that break the promise get their argmax.
    Returns SampledTokens(token_ids [bs] int64, logprobs [bs] float32).
    use_triton: None = Triton on CUDA, the reference elsewhere; True forces Triton (on CPU under
    TRITON_INTERPRET=1). splits: programs per row (None: num_splits; > 1 needs a real GPU).
    """
    _validate(logits, bitmask, temperature, top_k, top_p, min_p, noise_keys, has_mask, is_greedy)
    if use_triton is None:
        use_triton = logits.is_cuda and triton is not None
    if not use_triton:
        return masked_sample_ref(logits, bitmask, temperature, top_k, top_p, min_p, noise_keys,
                                 has_mask, is_greedy, dead_token)
    if triton is None:
        raise RuntimeError("masked_sample: use_triton=True but triton is not installed")
    bs, vocab = logits.shape
    device = logits.device
    ws = _workspace(device)
    if splits is None:
        splits = num_splits(bs, vocab, ws.num_sms)
    elif splits & (splits - 1) or splits < 1 or (splits > 1 and bs * splits > ws.num_sms):
        raise ValueError(f"splits: expected a power of two with bs * splits <= {ws.num_sms}, "
                         f"got {splits}")
    lanes = LANES // splits  # per program
    kind = "filters" if may_filter else "sample" if may_sample else "greedy"
    tile, num_warps, *cap = LAUNCH[(kind, "whole" if splits == 1 else "split2" if splits == 2 else "split")]
    maxnreg = cap[0] if cap else None  # registers per thread, when capped
    kr = max(1, tile // lanes)  # grid rows per tile
    kmax = triton.next_power_of_2(-(-vocab // LANES))  # grid rows of a lane
    kpos = triton.next_power_of_2(-(-vocab // (kr * LANES)))  # tokens per tile position
    chunk = -(-(-(-vocab // splits)) // 1024) * 1024  # the threshold search's part of a row
    tokens = torch.empty(bs, dtype=torch.int64, device=device)
    logprobs = torch.empty(bs, dtype=torch.float32, device=device)
    # lane records (sampling_records.py); an all-greedy batch has none (the pointer is unused)
    records = torch.empty(bs * 7 * LANES, dtype=torch.float32, device=device) if may_sample else logits
    # whole-row filtered programs keep each tile position's top values (sampling_lists.py)
    use_lists = may_filter and may_sample and splits == 1
    lists = (torch.empty(bs * NUM_LEVELS * kr * LANES, dtype=torch.float32, device=device) if use_lists
             else logits)
    has_bitmask = bitmask is not None
    stride_m = bitmask.stride(0) if has_bitmask else 0
    args = (logits, logits.stride(0), bitmask if has_bitmask else logits, stride_m,
            has_mask if has_mask is not None else logits,
            is_greedy if is_greedy is not None else logits, temperature, top_k, top_p, min_p,
            noise_keys, tokens, logprobs, ws.partials, ws.sync, records, lists, vocab, chunk, dead_token,
            has_bitmask, has_mask is not None, is_greedy is not None, splits, kr, kmax, 128,
            NUM_PIVOTS, may_filter, may_sample, WORD_TILES, use_lists, kpos)
    # what Triton specialises this kernel on (pointer dtypes and the alignment of the two
    # streamed tensors; the other pointers are read one scalar at a time)
    key = (device, WORD_TILES, may_filter, may_sample, logits.dtype, top_k.dtype, has_bitmask, has_mask is not None,
           is_greedy is not None, splits, kr, kmax, kpos, num_warps, maxnreg, logits.data_ptr() % 16,
           bitmask.data_ptr() % 16 if has_bitmask else 0,
           tuple((n % 16, n == 1) for n in (logits.stride(0), stride_m, vocab)))
    _launch(key, (bs, splits), args, num_warps, maxnreg)
    return SampledTokens(tokens, logprobs)


_COMPILED: dict = {}  # specialisation key -> compiled kernel
_DIRECT_LAUNCH: list = []  # [bool] once known: does this Triton launch as _launch does?


def _can_launch_directly() -> bool:
    """True when the installed Triton's own JIT launches a compiled kernel with the call that
    _launch repeats (checked once in its source), so skipping the JIT dispatch is safe."""
    if not _DIRECT_LAUNCH:
        import inspect
        from triton.runtime.jit import JITFunction
        call = ("kernel.run(grid_0, grid_1, grid_2, stream, kernel.function, kernel.packed_metadata, "
                "launch_metadata,")
        source = " ".join(inspect.getsource(JITFunction.run).split())
        _DIRECT_LAUNCH.append(_knobs is not None and call in source)
    return _DIRECT_LAUNCH[0]


def _launch(key, grid, args, num_warps: int, maxnreg: Optional[int] = None) -> None:
    """Launch the kernel; after the first call of a specialisation, straight through the
    compiled kernel's launcher (Triton's JIT dispatch costs tens of µs per call on the host)."""
    kernel = _COMPILED.get(key)
    if kernel is None or not args[0].is_cuda or not _can_launch_directly():
        cap = {} if maxnreg is None else {"maxnreg": maxnreg}
        kernel = masked_sample_kernel[grid](*args, num_warps=num_warps, **cap)
        if args[0].is_cuda:
            _COMPILED[key] = kernel
        return
    stream = torch._C._cuda_getCurrentRawStream(args[0].device.index)  # as Triton's driver asks
    enter, leave = _knobs.runtime.launch_enter_hook, _knobs.runtime.launch_exit_hook
    metadata = kernel.launch_metadata(grid, stream, *args) if enter is not None else None
    kernel.run(grid[0], grid[1], 1, stream, kernel.function, kernel.packed_metadata, metadata,
               enter, leave, *args)
