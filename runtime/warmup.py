"""The start-up warm-up on CUDA: a few tiny requests that make Triton compile the kernel
specialisations a first real request would otherwise wait for.

Triton compiles a kernel per specialisation (constexprs, integer arguments equal to 1 or divisible
by 16, pointer alignment) on first use, ~0.5 s each on an H200 with a cold cache (measured on
2026-11-28: a batch-1 request after only batch-64 traffic waited 577 ms for its first token, 16 ms
once warmed). CUDA-graph capture covers the decode forward and one-sequence prefills up to the
largest captured bucket; longer or batched prefills (the extend attention kernel), the sampling
kernel (a specialisation per row split and per mode) and the decode attention of eager mixed steps
(a specialisation per split count) would compile lazily, so they are compiled here too. Later
starts on the same machine load the compiled kernels from Triton's disk cache in milliseconds.

Run on the engine thread's loop like any request; the counters it moves are reset afterwards.
EngineConfig.skip_warmup (--skip-warmup) turns it off.
"""
from __future__ import annotations

# One batch-1 request per sampling mode a first user is likely to send: greedy, and temperature
# with top-p (the filtering kernel). Each prefills a fresh prompt (no cached prefix), then decodes.
_MODES = ({"temperature": 0.0}, {"temperature": 0.7, "top_p": 0.9})
_PROMPT_LEN = 24
_NEW_TOKENS = 3


def warm_up(engine) -> None:
    vocab = engine.loaded.vocab_size
    prompt_len = min(_PROMPT_LEN, engine.max_context_len - _NEW_TOKENS - 1)  # (tiny context_length)
    if prompt_len < 1:
        return
    for i, mode in enumerate(_MODES):
        prompt = [(7 + 31 * (i * prompt_len + j)) % vocab for j in range(prompt_len)]
        out = engine.generate(input_ids=prompt,
                              sampling_params=dict(mode, max_new_tokens=_NEW_TOKENS, ignore_eos=True))
        if "error" in out:
            raise RuntimeError(f"engine warm-up failed: {out['error']}")
    engine.call_in_loop(lambda: _warm_sampling(engine))
    engine.call_in_loop(lambda: _warm_attention(engine))
    engine.call_in_loop(lambda: _reset(engine))


def _warm_sampling(engine) -> None:
    """Compile the sampling kernel for every row split (programs per row, set by the batch size)
    that a batch of up to max_running_requests can pick, in each mode above and plain temperature
    sampling. Without this a serving run compiled ~0.5 s per new split mid-traffic (measured
    2026-11-28, H200: ten compiles inside the offline benchmark's timed run)."""
    import torch

    from .sampler import sample
    from .sampling_batch import SamplingBatchInfo
    from .sampling_params import SamplingParams
    runner = engine.runner
    if runner.device.type != "cuda":  # the reference sampler: nothing to compile
        return
    cap = engine.config.max_running_requests
    sizes = sorted({1 << i for i in range(cap.bit_length())} | {cap})  # 1, 2, 4, ... and cap
    gen = torch.Generator(device=runner.device).manual_seed(0)
    for mode in _MODES + ({"temperature": 0.7},):
        params = SamplingParams(**mode)
        for bs in sizes:
            logits = torch.randn(bs, runner.vocab_size, device=runner.device, generator=gen)  # [bs, V]
            sample(logits, SamplingBatchInfo.build([params] * bs, runner.vocab_size, runner.device, [0] * bs))
    torch.cuda.synchronize(runner.device)


def _warm_attention(engine) -> None:
    """Compile the attention specialisations of eager batches (the attention backend's warm_up):
    mixed steps with any number of decodes up to max_running_requests, and the decode batch
    sizes that no CUDA graph covers."""
    runner = engine.runner
    warm = getattr(runner.attn, "warm_up", None)
    if runner.device.type != "cuda" or warm is None:
        return
    cap = engine.config.max_running_requests
    graphs = runner.graph_runner
    covered = graphs.max_bs if graphs is not None else 0  # decode batches up to this replay graphs
    warm(runner.pool, runner.loaded.num_q_heads, cap, range(covered + 1, cap + 1))


def _reset(engine) -> None:
    """Back to a fresh engine's state: empty prefix cache, zeroed counters."""
    engine.scheduler.flush_cache()
    engine.num_steps = engine.num_generated_tokens = engine.num_overlapped_steps = 0
    s = engine.scheduler
    s.num_prompt_tokens = s.num_cached_prompt_tokens = s.num_retractions = 0
    engine.runner.num_graph_steps = engine.runner.num_prefill_graph_steps = 0
    engine.processor.num_jump_forward_tokens = 0
