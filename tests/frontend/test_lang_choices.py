"""The choices methods, on SGLang's test_choices mock data (expected winners from contract 2.6)."""
import pytest

import sgl_lang as sgl
from sgl_lang.errors import InvalidArgument

MOCK = {
    "choices": ["organ", "organism", "antidisestablishmentarianism"],
    "normalized_prompt_logprobs": [-0.1, -0.2, -0.05],
    "input_token_logprobs": [
        [[-0.1, 1, None]],
        [[-0.1, 1, None], [-0.3, 2, None]],
        [[-0.4, 3, None], [-0.25, 4, None], [-0.1, 5, None], [-0.01, 6, None],
         [-0.01, 7, None], [-0.01, 8, None], [-0.01, 9, None], [-0.01, 2, None]],
    ],
    "output_token_logprobs": [[[-0.1, 10, None]]] * 3,
    "unconditional_token_logprobs": [
        [[None, 1, None]],
        [[None, 1, None], [-1.4, 2, None]],
        [[None, 3, None], [-0.25, 4, None], [-0.1, 5, None], [-0.01, 6, None],
         [-0.01, 7, None], [-0.01, 8, None], [-0.01, 9, None], [-0.01, 2, None]],
    ],
}


def close(a, b, tol=0.01):
    return all(abs(x - y) <= tol for x, y in zip(a, b)) and len(a) == len(b)


def test_token_length_normalized_picks_highest_mean():
    assert sgl.token_length_normalized(**MOCK).decision == "antidisestablishmentarianism"


def test_greedy_token_selection_picks_organ_and_pads_with_mean():
    decision = sgl.greedy_token_selection(**MOCK)
    assert decision.decision == "organ"
    expected = [[-0.1] * 8, [-0.1, -0.3] + [-0.2] * 6, [-0.4, -0.25, -0.1] + [-0.01] * 5]
    for row, want in zip(decision.meta_info["greedy_logprob_matrix"], expected):
        assert close(row, want)


def test_unconditional_likelihood_normalized_picks_organism():
    decision = sgl.unconditional_likelihood_normalized(**MOCK)
    assert decision.decision == "organism"
    assert close(decision.meta_info["normalized_unconditional_prompt_logprobs"], [-0.1, 0.5, -0.05])
    assert sgl.unconditional_likelihood_normalized.requires_unconditional_logprobs
    assert not sgl.token_length_normalized.requires_unconditional_logprobs


def test_unconditional_requires_its_logprobs():
    data = dict(MOCK, unconditional_token_logprobs=None)
    with pytest.raises(InvalidArgument, match="unconditional"):
        sgl.unconditional_likelihood_normalized(**data)


def test_mismatched_lengths_are_rejected():
    with pytest.raises(InvalidArgument, match="3 choices"):
        sgl.token_length_normalized(**dict(MOCK, normalized_prompt_logprobs=[-1.0]))
