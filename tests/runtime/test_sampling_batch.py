"""SamplingBatchInfo's per-step half: the vectorised noise keys equal sampling_noise.key_words
exactly (any seed SamplingParams accepts), and a request set's constants reused over steps give
what a fresh build gives."""
from __future__ import annotations

import random

import numpy as np
import torch

from sgl_lang.kernels.sampling_noise import KEY_ADD, SEED_MUL, key_words
from sgl_lang.runtime.sampling_batch import BatchSamplingParams, SamplingBatchInfo, noise_key_words
from sgl_lang.runtime.sampling_params import SamplingParams as SP


def test_noise_key_words_equal_key_words_on_any_seed():
    rng = random.Random(0)
    # SamplingParams takes any Python int as a seed: negative, >= 2**63, >= 2**64
    seeds = ([0, 1, -1, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, 2 ** 64, -2 ** 63, -2 ** 64 - 5, 3 ** 100]
             + [rng.randrange(-2 ** 70, 2 ** 70) for _ in range(3000)]
             + [rng.randrange(1 << 62) for _ in range(3000)])
    steps = [rng.choice([0, 1, 2 ** 31, 2 ** 40, rng.randrange(1 << 20)]) for _ in seeds]
    terms = np.array([(s * SEED_MUL + KEY_ADD) % (1 << 64) for s in seeds], dtype=np.uint64)
    got = noise_key_words(terms, np.array(steps, dtype=np.uint64))
    assert got.dtype == np.int32 and got.shape == (len(seeds), 2)
    assert [tuple(row) for row in got.tolist()] == [key_words(s, t) for s, t in zip(seeds, steps)]
    for s in seeds[:10]:
        SP(seed=s)  # each is a seed a request may carry


def test_seeded_rows_keys_are_key_words_and_unseeded_rows_are_fresh_every_step():
    params = [SP(seed=-7, temperature=0.8), SP(temperature=0.8), SP(seed=2 ** 64 + 3, top_p=0.9),
              SP(temperature=0)]
    batch = BatchSamplingParams(params, 100)
    a, b = batch.at([5, 5, 9, 0]), batch.at([5, 5, 9, 0])
    assert a.noise_keys.dtype == torch.int32 and a.noise_keys.shape == (4, 2)
    for i, step in [(0, 5), (2, 9)]:
        assert tuple(a.noise_keys[i].tolist()) == key_words(params[i].seed, step)
        assert torch.equal(a.noise_keys[i], b.noise_keys[i])
    assert not torch.equal(a.noise_keys[1], b.noise_keys[1])  # equal with probability 2**-64
    assert tuple(batch.at([6, 0, 10, 0]).noise_keys[0].tolist()) == key_words(-7, 6)


def test_reused_constants_match_a_fresh_build():
    rng = random.Random(1)
    params = [SP(temperature=rng.choice([0.0, 0.7, 1.3]), top_p=rng.choice([1.0, 0.9]),
                 top_k=rng.choice([-1, 1, 5, 500]), min_p=rng.choice([0.0, 0.1]),
                 repetition_penalty=rng.choice([1.0, 1.2]), seed=rng.choice([None, 11, -3]))
              for _ in range(40)]
    batch = BatchSamplingParams(params, 300)
    for step in range(3):
        steps = [step + i for i in range(len(params))]
        got, want = batch.at(steps), SamplingBatchInfo.build(params, 300, steps=steps)
        seeded = torch.tensor([p.seed is not None for p in params])
        for name, value in vars(want).items():
            if name == "noise_keys":
                assert torch.equal(got.noise_keys[seeded], value[seeded])
            elif isinstance(value, torch.Tensor):
                assert torch.equal(getattr(got, name), value), name
            else:
                assert getattr(got, name) == value, name
