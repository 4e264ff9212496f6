"""Strategies that pick one of `select`'s choices from scored logprobs (SGLang's choices_method).

Every method is called with keyword arguments (one list per choice, each token entry
`(logprob, token_id, text)`):
    choices, normalized_prompt_logprobs, input_token_logprobs, output_token_logprobs,
    unconditional_token_logprobs (only for methods with requires_unconditional_logprobs)
and returns a ChoicesDecision.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from .errors import InvalidArgument


@dataclass(frozen=True)
class ChoicesDecision:
    decision: str
    meta_info: dict[str, Any] = field(default_factory=dict)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("-inf")


def _logprobs(entries: Sequence[Sequence[Any]]) -> list[float]:
    """The logprob column of token entries; a None logprob (first token of a sequence) counts as 0."""
    return [0.0 if e[0] is None else float(e[0]) for e in entries]


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])  # first index wins ties


class ChoicesMethod:
    """Base class: subclasses implement `__call__` with the keyword arguments above."""
    name = "choices_method"
    requires_unconditional_logprobs = False

    def __repr__(self) -> str:
        return self.name

    @staticmethod
    def _check(choices: Sequence[str], **lists: Optional[Sequence]) -> None:
        if not choices:
            raise InvalidArgument("choices must not be empty")
        for key, value in lists.items():
            if value is not None and len(value) != len(choices):
                raise InvalidArgument(f"{key} has {len(value)} entries for {len(choices)} choices")


class TokenLengthNormalized(ChoicesMethod):
    """Highest mean logprob per token (SGLang's default)."""
    name = "token_length_normalized"

    def __call__(self, *, choices, normalized_prompt_logprobs, input_token_logprobs,
                 output_token_logprobs, unconditional_token_logprobs=None) -> ChoicesDecision:
        self._check(choices, normalized_prompt_logprobs=normalized_prompt_logprobs)
        best = _argmax(normalized_prompt_logprobs)
        return ChoicesDecision(choices[best], {
            "normalized_prompt_logprobs": normalized_prompt_logprobs,
            "input_token_logprobs": input_token_logprobs,
            "output_token_logprobs": output_token_logprobs,
        })


class GreedyTokenSelection(ChoicesMethod):
    """Compare choices token by token: keep the rows that reach the best logprob at each position
    until one is left. Shorter choices are padded with their own mean logprob."""
    name = "greedy_token_selection"

    def __call__(self, *, choices, normalized_prompt_logprobs, input_token_logprobs,
                 output_token_logprobs, unconditional_token_logprobs=None) -> ChoicesDecision:
        self._check(choices, input_token_logprobs=input_token_logprobs)
        rows = [_logprobs(entries) for entries in input_token_logprobs]
        width = max(len(r) for r in rows)
        matrix = [r + [_mean(r)] * (width - len(r)) for r in rows]  # [num_choices, width]
        alive = list(range(len(choices)))
        for col in range(width):
            best = max(matrix[i][col] for i in alive)
            alive = [i for i in alive if matrix[i][col] >= best]
            if len(alive) == 1:
                break
        return ChoicesDecision(choices[alive[0]], {
            "normalized_prompt_logprobs": normalized_prompt_logprobs,
            "input_token_logprobs": input_token_logprobs,
            "output_token_logprobs": output_token_logprobs,
            "greedy_logprob_matrix": matrix,
        })


class UnconditionalLikelihoodNormalized(ChoicesMethod):
    """Highest mean of (conditional - unconditional) token logprob: discounts choices that are
    likely whatever the context."""
    name = "unconditional_likelihood_normalized"
    requires_unconditional_logprobs = True

    def __call__(self, *, choices, normalized_prompt_logprobs, input_token_logprobs,
                 output_token_logprobs, unconditional_token_logprobs=None) -> ChoicesDecision:
        if unconditional_token_logprobs is None:
            raise InvalidArgument(f"{self.name} needs unconditional_token_logprobs")
        self._check(choices, input_token_logprobs=input_token_logprobs,
                    unconditional_token_logprobs=unconditional_token_logprobs)
        scores = []
        for cond, uncond in zip(input_token_logprobs, unconditional_token_logprobs):
            diffs = [c - u for c, u in zip(_logprobs(cond), _logprobs(uncond))]
            scores.append(_mean(diffs))
        best = _argmax(scores)
        return ChoicesDecision(choices[best], {
            "normalized_prompt_logprobs": normalized_prompt_logprobs,
            "input_token_logprobs": input_token_logprobs,
            "output_token_logprobs": output_token_logprobs,
            "unconditional_token_logprobs": unconditional_token_logprobs,
            "normalized_unconditional_prompt_logprobs": scores,
        })


token_length_normalized = TokenLengthNormalized()
greedy_token_selection = GreedyTokenSelection()
unconditional_likelihood_normalized = UnconditionalLikelihoodNormalized()
