"""Routing policies, the approximate prefix tree and request keys: pure logic, no model, no HTTP."""
import pytest

from sgl_lang.runtime.router import (LeastLoad, PrefixAffinity, PrefixTree, RoundRobin,
                                     RouterConfig, RouterConfigError, make_policy)
from sgl_lang.runtime.router.request_key import routing_keys

FEW_SHOT = {g: f"Group {g} few-shot prompt. " + " ".join(f"Example {g}.{i}: q -> a." for i in range(20))
            for g in "ABCD"}


def cfg(**kw) -> RouterConfig:
    return RouterConfig(worker_urls=("http://w0", "http://w1", "http://w2"), chunk_len=4, **kw)


# ---- PrefixTree
def test_tree_matches_per_worker_prefix_len():
    t = PrefixTree(chunk_len=4)
    t.insert("abcdefghijkl", 0)
    t.insert("abcdefgXYZWV", 1)
    matched, key_len = t.match("abcdefghijklmnop")
    assert key_len == 16
    assert matched == {0: 12, 1: 4}
    assert t.match("zzzzabcd") == ({}, 8)
    assert t.match("abc") == ({}, 0)  # shorter than one chunk: nothing to match


def test_tree_token_ids_and_text_do_not_mix():
    t = PrefixTree(chunk_len=2)
    t.insert([1, 2, 3, 4, 5], 0)
    assert t.match([1, 2, 3, 4, 9, 9])[0] == {0: 4}
    assert t.match("\x01\x02\x03\x04")[0] == {}


def test_tree_eviction_keeps_budget_and_recent_prefixes():
    t = PrefixTree(chunk_len=1, max_chunks_per_worker=20)
    t.insert("0123456789", 0)  # old
    t.insert("abcdefghij", 0)  # recent
    t.insert("ABCDEFGHIJ", 0)  # most recent: over budget, the oldest leaves go first
    assert t.num_chunks(0) == 18  # 30 - 10 over budget - a tenth of the budget (amortised eviction)
    assert t.match("ABCDEFGHIJ")[0] == {0: 10}
    assert t.match("0123456789")[0] == {}  # the oldest prompt went first, whole
    assert t.match("abcdefghij")[0] == {0: 8}  # then the tail of the next oldest
    t.insert("ABCDEFGHIJ", 1)
    assert t.match("ABCDEFGHIJ")[0] == {0: 10, 1: 10}  # other workers keep their own budget


def test_tree_eviction_never_breaks_prefix_closure():
    t = PrefixTree(chunk_len=1, max_chunks_per_worker=30)
    import random
    rng = random.Random(0)
    for _ in range(200):
        t.insert("".join(rng.choice("ab") for _ in range(rng.randint(1, 12))), rng.randint(0, 1))
        assert t.num_chunks(0) <= 30 and t.num_chunks(1) <= 30
    # recount from the tree itself: every node naming a worker has its parent naming it too
    counts = {0: 0, 1: 0}
    stack = [(t.root, {0, 1})]
    while stack:
        node, parent_workers = stack.pop()
        for child in node.children.values():
            assert set(child.last_used) <= parent_workers
            assert child.last_used or child.children, "empty nodes are pruned"
            for w in child.last_used:
                counts[w] += 1
            stack.append((child, set(child.last_used)))
    assert counts == {0: t.num_chunks(0), 1: t.num_chunks(1)}


def test_tree_remove_worker():
    t = PrefixTree(chunk_len=2)
    t.insert("aabbcc", 0)
    t.insert("aabbdd", 1)
    t.remove_worker(0)
    assert t.match("aabbcc")[0] == {1: 4}
    assert t.num_chunks(0) == 0


# ---- policies
def test_round_robin_cycles_over_candidates():
    p = RoundRobin()
    seen = []
    for _ in range(6):
        d = p.choose([], {0: 5, 1: 0, 2: 9})
        p.on_routed([], d.worker)
        seen.append(d.worker)
    assert seen == [0, 1, 2, 0, 1, 2]
    d = p.choose([], {0: 0, 2: 0})  # worker 1 unhealthy: skipped
    assert d.worker == 0


def test_least_load_picks_fewest_in_flight_and_rotates_ties():
    p = LeastLoad()
    assert p.choose([], {0: 3, 1: 1, 2: 2}).worker == 1
    picks = set()
    for _ in range(3):
        d = p.choose([], {0: 0, 1: 0, 2: 0})
        p.on_routed([], d.worker)
        picks.add(d.worker)
    assert picks == {0, 1, 2}


def test_prefix_affinity_keeps_groups_on_one_worker_and_spreads_groups():
    p = PrefixAffinity(cfg())
    home = {}
    for i in range(5):
        for g in "ABC":
            d = p.choose([FEW_SHOT[g] + f" Question {i}?"], {0: 0, 1: 0, 2: 0})
            p.on_routed([FEW_SHOT[g] + f" Question {i}?"], d.worker)
            home.setdefault(g, d.worker)
            assert d.worker == home[g], (g, i, d)
            assert d.reason == ("least_load" if i == 0 else "prefix")
    assert sorted(home.values()) == [0, 1, 2]  # three new groups went to three different workers


def test_prefix_affinity_falls_back_when_below_threshold():
    p = PrefixAffinity(cfg(cache_threshold=0.9))
    p.on_routed(["shared-prefix-" * 4], 2)
    d = p.choose(["shared-prefix-" * 4 + "then a much longer different tail " * 3], {0: 0, 1: 0, 2: 0})
    assert d.reason == "least_load" and d.worker in (0, 1)  # worker 2 holds cache, so it is not "emptiest"
    d = p.choose(["shared-prefix-" * 4 + "tail"], {0: 0, 1: 0, 2: 0})
    assert d.reason == "prefix" and d.worker == 2


def test_prefix_affinity_tolerates_some_load_but_not_imbalance():
    p = PrefixAffinity(cfg(balance_abs_threshold=4, balance_rel_threshold=2.0))
    key = [FEW_SHOT["A"]]
    p.on_routed(key, 1)
    assert p.choose(key, {0: 0, 1: 4, 2: 1}).worker == 1  # hi - lo = 4: not above the threshold
    d = p.choose(key, {0: 0, 1: 5, 2: 1})
    assert d.reason == "imbalance" and d.worker == 0
    assert p.choose(key, {0: 0, 2: 3}).reason == "least_load"  # worker 1 unhealthy: its cache is moot


def test_prefix_affinity_forget_and_batches():
    p = PrefixAffinity(cfg())
    p.on_routed([FEW_SHOT["A"], FEW_SHOT["B"]], 0)
    assert p.choose([FEW_SHOT["B"], FEW_SHOT["A"]], {0: 0, 1: 0}).worker == 0
    p.forget(0)
    assert p.choose([FEW_SHOT["A"]], {0: 0, 1: 0}).reason == "least_load"


def test_prefix_affinity_token_id_prompts():
    p = PrefixAffinity(cfg())
    ids = list(range(100))
    p.on_routed([ids], 2)
    assert p.choose([ids + [7, 7, 7]], {0: 0, 1: 0, 2: 0}).worker == 2


def test_make_policy_and_config_validation():
    assert make_policy(cfg(policy="round_robin")).name == "round_robin"
    assert make_policy(cfg(policy="least_load")).name == "least_load"
    assert make_policy(cfg()).name == "prefix"
    with pytest.raises(RouterConfigError, match="policy must be one of"):
        cfg(policy="random")
    with pytest.raises(RouterConfigError, match="at least one worker"):
        RouterConfig()
    with pytest.raises(RouterConfigError, match="must start with http"):
        RouterConfig(worker_urls=("localhost:3000",))
    with pytest.raises(RouterConfigError, match="duplicate"):
        RouterConfig(worker_urls=("http://a", "http://a"))
    with pytest.raises(RouterConfigError, match="cache_threshold"):
        cfg(cache_threshold=1.5)


# ---- request keys
def test_routing_keys_per_route():
    assert routing_keys("/generate", {"text": "hi"}) == ["hi"]
    assert routing_keys("/generate", {"text": ["a", "b"]}) == ["a", "b"]
    assert routing_keys("/generate", {"input_ids": [1, 2, 3]}) == [[1, 2, 3]]
    assert routing_keys("/generate", {"input_ids": [[1, 2], [3]]}) == [[1, 2], [3]]
    assert routing_keys("/v1/completions", {"prompt": "p"}) == ["p"]
    assert routing_keys("/v1/completions", {"prompt": [5, 6]}) == [[5, 6]]
    chat = {"messages": [{"role": "system", "content": "S"},
                         {"role": "user", "content": [{"type": "text", "text": "U"}]}]}
    assert routing_keys("/v1/chat/completions", chat) == ["system\nS\nuser\nU\n"]
    assert routing_keys("/v1/models", {}) == []
    assert routing_keys("/generate", None) == []
    assert routing_keys("/generate", {"text": 5}) == []


def test_new_prefixes_spread_by_cache_size_unless_loads_diverge():
    p = PrefixAffinity(cfg(balance_abs_threshold=4, balance_rel_threshold=2.0))
    p.on_routed([FEW_SHOT["A"]], 0)
    p.on_routed([FEW_SHOT["B"]], 0)
    # worker 0 holds two groups; worker 1 is a bit busier but within tolerance: it gets the new group
    d = p.choose([FEW_SHOT["C"]], {0: 0, 1: 3})
    assert (d.worker, d.reason) == (1, "least_load")
    # worker 1 far busier (beyond balance_abs_threshold): the idle worker wins despite its cache
    assert p.choose([FEW_SHOT["C"]], {0: 0, 1: 5}).reason == "imbalance"
    # not imbalanced by the relative rule (19 <= 2 x 10), but 9 more in flight: least load wins
    d = p.choose([FEW_SHOT["C"]], {0: 10, 1: 19})
    assert (d.worker, d.reason) == (0, "least_load")
