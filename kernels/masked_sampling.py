"""masked_sample: grammar bitmask + temperature + top-k/top-p/min-p + the draw, fused per row.

Exact semantics, per row b (x = logits[b] as float32, V = vocab size):
    if has_mask[b]:  x[j] = -inf wherever bit j of bitmask[b] is 0
    allowed = x > -inf;  if not any(allowed): token[b] = -1  (a dead end: nothing may be drawn)
    if temperature[b] == 0:  token[b] = argmax(x)                        (first index on ties)
    else:
        s = x / temperature[b];  m = max(s);  p = exp(s - m) / sum(exp(s - m))
        keep[j] = allowed[j]
              and (top_k[b] <= 0 or #{i: s[i] > s[j]} < top_k[b])            (top-k)
              and (top_p[b] >= 1 or sum(p[i] for s[i] > s[j]) < top_p[b])    (top-p)
              and s[j] - m >= log(min_p[b])                                    (min-p; 0 = off)
        token[b] = argmax over keep of s[j] + gumbel(seed[b], step[b], j)    (first index on ties)
The filters use the unrenormalised probabilities (SGLang/vLLM order); each is "s[j] >= threshold",
so the kernel finds one threshold per row and draws with Gumbel-max (no sort, no host sync).
gumbel(seed, step, j) = -log(-log(u)), u from a counter hash of (seed, step, j) implemented
identically in torch and Triton, so reference and kernel draw the same token from the same seed.

Passes over a row in the Triton kernel (one program per row, the row streamed in BLOCK chunks):
    greedy / plain temperature rows: 1 pass (mask, scale, Gumbel-max fused);
    min-p rows: 2 (the max first);  top-k/top-p rows: 2 + 32 + 1: after max and normaliser, a
    bisection over the 32-bit ordered float keys finds the exact threshold, each step counting
    (top-k) and summing probability (top-p) at once. A radix select (4 passes x 256 bins) would
    cut the 32 to 4; kept simple until the GPU benchmark says it matters.
On CPU the reference serves (Triton would need TRITON_INTERPRET=1, correct but far too slow).
"""
from __future__ import annotations

from typing import Optional

import torch

from .bitmask import unpack_bitmask

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs serve through the reference
    triton = None

_M32 = 0xFFFFFFFF
_GOLDEN, _MIX1, _MIX2, _STEP = 0x9E3779B1, 0x85EBCA6B, 0xC2B2AE35, 0x85EBCA77


def _fmix32_ref(v: torch.Tensor) -> torch.Tensor:
    """murmur3's finaliser on uint32 values held in int64."""
    v = v ^ (v >> 16)
    v = (v * _MIX1) & _M32
    v = v ^ (v >> 13)
    v = (v * _MIX2) & _M32
    return v ^ (v >> 16)


def gumbel_noise_ref(seeds: torch.Tensor, steps: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[bs] int64, [bs] int64 -> [bs, vocab] float32 Gumbel(0, 1) noise, deterministic."""
    key = (seeds * _GOLDEN + steps * _STEP) & _M32  # [bs]
    j = torch.arange(vocab_size, device=seeds.device, dtype=torch.int64)  # [vocab]
    v = _fmix32_ref(((j * _GOLDEN) & _M32) ^ key[:, None])  # [bs, vocab]
    v = _fmix32_ref((v + key[:, None]) & _M32)
    u = ((v >> 8).to(torch.float32) + 0.5) * (1.0 / 16777216.0)  # in (0, 1)
    return -torch.log(-torch.log(u))


def masked_sample_ref(logits, bitmask, has_mask, temperature, top_k, top_p, min_p, seeds, steps):
    """Plain-torch reference; same arguments and result as masked_sample."""
    bs, vocab = logits.shape
    x = logits.float()  # [bs, vocab]
    if bitmask is not None:
        blocked = ~unpack_bitmask(bitmask, vocab) & has_mask[:, None]  # [bs, vocab]
        x = x.masked_fill(blocked, float("-inf"))
    allowed = x > float("-inf")  # [bs, vocab]
    greedy = temperature <= 0  # [bs]
    t = torch.where(greedy, torch.ones_like(temperature), temperature).float()
    s = x / t[:, None]  # [bs, vocab]
    m = s.max(dim=1, keepdim=True).values  # [bs, 1]
    safe_m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - safe_m)  # [bs, vocab] unnormalised probabilities
    z = e.sum(dim=1, keepdim=True)  # [bs, 1]
    # ranks and "mass strictly above" via a sort; equal values share the smaller rank/mass
    order = torch.argsort(s, dim=1, descending=True, stable=True)  # [bs, vocab]
    s_sorted = torch.gather(s, 1, order)
    e_sorted = torch.gather(e, 1, order)
    pos = torch.arange(vocab, device=s.device).expand(bs, vocab)  # [bs, vocab]
    is_new = torch.ones_like(s_sorted, dtype=torch.bool)
    is_new[:, 1:] = s_sorted[:, 1:] != s_sorted[:, :-1]
    first_pos = torch.cummax(torch.where(is_new, pos, torch.zeros_like(pos)), dim=1).values
    mass_before = torch.cumsum(e_sorted, dim=1) - e_sorted  # exclusive
    mass_above_sorted = torch.gather(mass_before, 1, first_pos)  # mass of values > s_sorted
    rank, mass_above = torch.empty_like(pos), torch.empty_like(s)
    rank.scatter_(1, order, first_pos)
    mass_above.scatter_(1, order, mass_above_sorted)
    keep = allowed.clone()
    keep &= (top_k[:, None] <= 0) | (rank < top_k[:, None])
    keep &= (top_p[:, None] >= 1) | (mass_above < top_p[:, None].float() * z)
    log_min_p = torch.log(min_p.float()).to(torch.float32)  # -inf when 0
    keep &= (s - m) >= log_min_p[:, None]
    noisy = torch.where(keep, s + gumbel_noise_ref(seeds, steps, vocab), float("-inf"))
    token = torch.where(greedy, torch.argmax(s, dim=1), torch.argmax(noisy, dim=1))
    return torch.where(allowed.any(dim=1), token, torch.full_like(token, -1))


if triton is not None:
    @triton.jit
    def _fmix32(v):
        v = v ^ (v >> 16)
        v = v * 0x85EBCA6B
        v = v ^ (v >> 13)
        v = v * 0xC2B2AE35
        return v ^ (v >> 16)

    @triton.jit
    def _row_chunk(logits_ptr, mask_ptr, row_masked, inv_t, offs, V):
        """Scaled, masked logits of one chunk: [BLOCK] float32, -inf where not allowed."""
        in_vocab = offs < V
        x = tl.load(logits_ptr + offs, mask=in_vocab, other=float("-inf")).to(tl.float32)
        is_row_masked = (offs * 0 + row_masked) != 0  # [BLOCK] broadcast of the row's flag
        words = tl.load(mask_ptr + offs // 32, mask=in_vocab & is_row_masked, other=-1)
        ok = in_vocab & (((words >> (offs % 32)) & 1) != 0)
        return tl.where(ok, x * inv_t, float("-inf"))

    @triton.jit
    def _ordered_key(s):
        """float32 -> int32 with the same order (negative floats get their low 31 bits flipped)."""
        b = s.to(tl.int32, bitcast=True)
        return tl.where(b >= 0, b, b ^ 0x7FFFFFFF)

    @triton.jit
    def _masked_sample_kernel(logits_ptr, stride_l, mask_ptr, stride_m, has_mask_ptr, temp_ptr,
                              top_k_ptr, top_p_ptr, min_p_ptr, seed_ptr, step_ptr, out_ptr, V,
                              HAS_BITMASK: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        logits_ptr += row.to(tl.int64) * stride_l
        mask_ptr += row.to(tl.int64) * stride_m
        row_masked = 0
        if HAS_BITMASK:
            row_masked = tl.load(has_mask_ptr + row).to(tl.int32)
        temp = tl.load(temp_ptr + row)
        is_sampled = temp > 0
        inv_t = 1.0 / tl.where(is_sampled, temp, 1.0)
        top_k = tl.load(top_k_ptr + row)
        top_p = tl.load(top_p_ptr + row)
        min_p = tl.load(min_p_ptr + row)
        seed = tl.load(seed_ptr + row)
        step = tl.load(step_ptr + row)
        key = ((seed * 0x9E3779B1 + step * 0x85EBCA77) & 0xFFFFFFFF).to(tl.uint32)
        needs_max = (min_p > 0) | (top_k > 0) | (top_p < 1)  # a threshold needs max (and sum)
        draw_now = is_sampled & (needs_max == 0)  # plain temperature sampling: Gumbel-max in pass 1

        # pass 1: max (greedy argmax) or, for plain sampling, the Gumbel-max draw itself
        best = tl.full((), float("-inf"), tl.float32)
        best_idx = tl.full((), -1, tl.int32)
        m = tl.full((), float("-inf"), tl.float32)
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            s = _row_chunk(logits_ptr, mask_ptr, row_masked, inv_t, offs, V)
            m = tl.maximum(m, tl.max(s, axis=0))
            if draw_now:
                v = _fmix32((offs.to(tl.uint32) * 0x9E3779B1) ^ key)
                v = _fmix32(v + key)
                u = ((v >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)
                s = tl.where(s > float("-inf"), s - tl.log(-tl.log(u)), float("-inf"))
            c_best = tl.max(s, axis=0)
            c_idx = tl.argmax(s, axis=0).to(tl.int32) + start
            take = c_best > best
            best_idx = tl.where(take, c_idx, best_idx)
            best = tl.where(take, c_best, best)

        if is_sampled & needs_max & (m > float("-inf")):
            # pass 2: normaliser; thresholds are kept as ordered int keys
            z = tl.zeros((), tl.float32)
            for start in range(0, V, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                s = _row_chunk(logits_ptr, mask_ptr, row_masked, inv_t, offs, V)
                z += tl.sum(tl.exp(s - m), axis=0)
            lo_min = _ordered_key(tl.full((), float("-inf"), tl.float32)).to(tl.int64)
            thr = lo_min
            log_min_p = tl.where(min_p > 0, tl.log(tl.maximum(min_p, 1e-30)), float("-inf"))
            if (top_k > 0) | (top_p < 1):
                # bisection: largest key t with count(s >= t) >= top_k, resp. mass(s >= t) >= top_p*z
                k_lo, k_hi = lo_min, _ordered_key(m).to(tl.int64)
                p_lo, p_hi = lo_min, _ordered_key(m).to(tl.int64)
                for _ in range(33):
                    k_mid = k_lo + (k_hi - k_lo + 1) // 2
                    p_mid = p_lo + (p_hi - p_lo + 1) // 2
                    count = tl.zeros((), tl.int32)
                    mass = tl.zeros((), tl.float32)
                    for start in range(0, V, BLOCK):
                        offs = start + tl.arange(0, BLOCK)
                        s = _row_chunk(logits_ptr, mask_ptr, row_masked, inv_t, offs, V)
                        k = _ordered_key(s).to(tl.int64)
                        ok = s > float("-inf")
                        count += tl.sum((ok & (k >= k_mid)).to(tl.int32), axis=0)
                        mass += tl.sum(tl.where(ok & (k >= p_mid), tl.exp(s - m), 0.0), axis=0)
                    k_ok = (count >= top_k) | (k_lo == k_hi)  # lo == hi: converged, stay
                    k_lo, k_hi = tl.where(k_ok, k_mid, k_lo), tl.where(k_ok, k_hi, k_mid - 1)
                    p_ok = (mass >= top_p * z) | (p_lo == p_hi)
                    p_lo, p_hi = tl.where(p_ok, p_mid, p_lo), tl.where(p_ok, p_hi, p_mid - 1)
                if top_k > 0:
                    thr = tl.maximum(thr, k_lo)
                if top_p < 1:
                    thr = tl.maximum(thr, p_lo)
            # final pass: Gumbel-max over the kept tokens
            best = tl.full((), float("-inf"), tl.float32)
            best_idx = tl.full((), -1, tl.int32)
            for start in range(0, V, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                s = _row_chunk(logits_ptr, mask_ptr, row_masked, inv_t, offs, V)
                keep = (s > float("-inf")) & (_ordered_key(s).to(tl.int64) >= thr) \
                    & ((s - m) >= log_min_p)
                v = _fmix32((offs.to(tl.uint32) * 0x9E3779B1) ^ key)
                v = _fmix32(v + key)
                u = ((v >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)
                s = tl.where(keep, s - tl.log(-tl.log(u)), float("-inf"))
                c_best = tl.max(s, axis=0)
                c_idx = tl.argmax(s, axis=0).to(tl.int32) + start
                take = c_best > best
                best_idx = tl.where(take, c_idx, best_idx)
                best = tl.where(take, c_best, best)
        tl.store(out_ptr + row, best_idx.to(tl.int64))


def _check(name: str, t: torch.Tensor, dtype, bs: int, device) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {t.dtype}")
    if t.shape != (bs,):
        raise ValueError(f"{name}: expected shape [{bs}], got {list(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name}: expected device {device}, got {t.device}")


def masked_sample(logits: torch.Tensor, bitmask: Optional[torch.Tensor], temperature: torch.Tensor,
                  top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor,
                  seeds: torch.Tensor, steps: torch.Tensor, has_mask: Optional[torch.Tensor] = None,
                  use_triton: Optional[bool] = None) -> torch.Tensor:
    """Draw one token per row; see the module docstring for the exact semantics.

    logits [bs, vocab] float32/bfloat16/float16; bitmask [bs, ceil(vocab/32)] int32 or None (no
    row constrained); has_mask [bs] bool (None: every row constrained when bitmask is given);
    temperature/top_p/min_p [bs] float32 (temperature 0 = greedy); top_k [bs] int32 (<= 0 = off);
    seeds/steps [bs] int64 (steps: the request's output position, so each step draws afresh).
    Returns [bs] int64 token ids, -1 for a row where no token is allowed.
    use_triton: None = Triton on CUDA, the reference elsewhere; True forces Triton.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"logits: expected a 2-D tensor [bs, vocab], got "
                         f"{list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
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
        if has_mask is None:
            has_mask = torch.ones(bs, dtype=torch.bool, device=device)
        _check("has_mask", has_mask, torch.bool, bs, device)
    elif has_mask is not None and bool(has_mask.any()):
        raise ValueError("has_mask marks constrained rows but bitmask is None")
    for name, t, dtype in (("temperature", temperature, torch.float32), ("top_k", top_k, torch.int32),
                           ("top_p", top_p, torch.float32), ("min_p", min_p, torch.float32),
                           ("seeds", seeds, torch.int64), ("steps", steps, torch.int64)):
        _check(name, t, dtype, bs, device)

    if use_triton is None:
        use_triton = logits.is_cuda and triton is not None
    if not use_triton:
        if has_mask is None:
            has_mask = torch.zeros(bs, dtype=torch.bool, device=device)
        return masked_sample_ref(logits, bitmask, has_mask, temperature, top_k, top_p, min_p,
                                 seeds, steps)
    if triton is None:
        raise RuntimeError("masked_sample: use_triton=True but triton is not installed")
    out = torch.empty(bs, dtype=torch.int64, device=device)
    block = min(4096, triton.next_power_of_2(vocab))
    has_bitmask = bitmask is not None
    dummy = torch.zeros(1, dtype=torch.int32, device=device)  # never read without a bitmask
    _masked_sample_kernel[(bs,)](
        logits, logits.stride(0), bitmask if has_bitmask else dummy,
        bitmask.stride(0) if has_bitmask else 0,
        has_mask.to(torch.int8) if has_bitmask else dummy, temperature, top_k, top_p, min_p,
        seeds, steps, out, vocab, HAS_BITMASK=has_bitmask, BLOCK=block)
    return out
