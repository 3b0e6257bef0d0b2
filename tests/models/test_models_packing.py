"""The training loss, packed and plain: same values and gradients as the reference, same curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.models.blas import import_mlx
from engine.models.packing import attention_within_examples, iterate_packed, pack_rows, packed_loss, row_arrays
from engine.pipeline.recipes import parse_recipe
from tests.models.test_models_train import QA, chat

ROOT = Path(__file__).resolve().parents[2]


def _model(path: Path):  # noqa: ANN202
    from mlx_lm import load

    model, tokenizer = load(str(path))[:2]
    return model, tokenizer


def _examples(tokenizer, mask_prompt: bool = True) -> list[tuple[list[int], int]]:  # noqa: ANN001
    from mlx_lm.tuner.datasets import ChatDataset

    data = ChatDataset(
        [chat(q, a, system=i % 2 == 0) for i, (q, a) in enumerate(QA)], tokenizer, mask_prompt=mask_prompt
    )
    return [data.process(data[i]) for i in range(len(QA))]


def test_cross_entropy_matches_mlx_in_value_and_gradient() -> None:
    mx = import_mlx()
    import mlx.nn as nn

    from engine.models.loss import cross_entropy

    mx.random.seed(3)
    logits = mx.random.normal((2, 7, 50)) * 30  # large logits: exp overflows without the max shift
    targets = mx.random.randint(0, 50, (2, 7))
    weights = mx.random.uniform(shape=(2, 7))
    ours = mx.value_and_grad(lambda x: (cross_entropy(x, targets) * weights).sum())(logits)
    ref = mx.value_and_grad(lambda x: (nn.losses.cross_entropy(x, targets) * weights).sum())(logits)
    assert abs(ours[0].item() - ref[0].item()) < 1e-3 * abs(ref[0].item())
    assert mx.abs(ours[1] - ref[1]).max().item() < 1e-5
    compiled = mx.compile(mx.value_and_grad(lambda x: (cross_entropy(x, targets) * weights).sum()))(logits)
    assert mx.abs(compiled[1] - ref[1]).max().item() < 1e-5


def test_pack_rows_fills_greedily_and_gives_long_examples_their_own_row() -> None:
    examples = [([1] * 5, 0), ([2] * 4, 0), ([3] * 20, 0), ([4] * 3, 2), ([5] * 2, 0)]
    rows = pack_rows(examples, 10)
    assert rows == [[0, 1], [2], [3, 4]]
    tokens, segments, weights = row_arrays(examples, rows, 10)
    assert tokens[1].tolist() == [3] * 10  # truncated to the row
    assert segments[2].tolist() == [1, 1, 1, 2, 2, 0, 0, 0, 0, 0]
    # the first token of each example is never a target; a prompt of 2 is not counted either
    assert weights[2].tolist() == [False, False, True, False, True] + [False] * 5


@pytest.mark.parametrize("mask_prompt", [True, False])
def test_a_packed_row_scores_each_example_as_if_it_stood_alone(tiny_llama: Path, mask_prompt: bool) -> None:
    """Block-diagonal attention: the packed loss (and gradient) equals the per-example losses."""
    mx = import_mlx()
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, tokenizer = _model(tiny_llama)
    model.freeze()
    linear_to_lora_layers(model, 2, {"rank": 4, "scale": 20.0, "dropout": 0.0})
    examples = _examples(tokenizer, mask_prompt)
    width = sum(len(t) for t, _ in examples) + 5  # one row holds them all, plus padding
    packed = [mx.array(a) for a in row_arrays(examples, [list(range(len(examples)))], width)]
    alone = [[mx.array(a) for a in row_arrays(examples, [[i]], width)] for i in range(len(examples))]
    grad = nn.value_and_grad(model, packed_loss)
    with attention_within_examples(model):
        (loss, ntoks), g_packed = grad(model, *packed)
        parts = [grad(model, *row) for row in alone]
    total = sum(p[0][0].item() * p[0][1].item() for p in parts)
    count = sum(p[0][1].item() for p in parts)
    assert ntoks.item() == count
    assert loss.item() == pytest.approx(total / count, rel=1e-4)
    g_alone = [dict(tree_flatten(p[1])) for p in parts]
    for name, value in tree_flatten(g_packed):
        summed = sum(g[name] * p[0][1].item() for g, p in zip(g_alone, parts, strict=True)) / count
        assert mx.abs(value - summed).max().item() < 1e-4 * (1 + mx.abs(summed).max().item())
    # without the block mask, later examples see earlier ones and the loss differs
    assert abs(packed_loss(model, *packed)[0].item() - loss.item()) > 1e-4


def test_iterate_packed_gives_each_rank_its_share_and_every_example_once(tiny_llama: Path) -> None:
    import numpy as np

    _, tokenizer = _model(tiny_llama)
    examples = _examples(tokenizer) * 3

    class Group:
        def __init__(self, rank: int) -> None:
            self._rank = rank

        def rank(self) -> int:
            return self._rank

        def size(self) -> int:
            return 2

    per_rank = []
    for rank in (0, 1):
        np.random.seed(1)
        counts = []
        for tokens, segments, _ in iterate_packed(examples, 2, 128, comm_group=Group(rank)):
            assert tokens.shape[0] == 1 and tokens.shape[1] % 32 == 0 and tokens.shape[1] <= 128
            counts.append(int(np.array(segments).max()))
        per_rank.append(counts)
    np.random.seed(1)
    rows = pack_rows([examples[j] for j in np.random.permutation(len(examples))], 128)
    full = rows[: len(rows) // 2 * 2]  # whole batches of 2 rows; a last half batch is dropped, as mlx-lm does
    assert per_rank[0] == [len(r) for r in full[0::2]] and per_rank[1] == [len(r) for r in full[1::2]]
    assert max(len(r) for r in rows) > 1  # short examples do share rows


def _curve(tiny_llama: Path, batches: list, loss) -> list[float]:  # noqa: ANN001
    """Losses of compiled Adam steps (mlx-lm's step: state in and out of mx.compile) over `batches`."""
    from functools import partial

    mx = import_mlx()
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = _model(tiny_llama)
    model.freeze()
    mx.random.seed(0)
    linear_to_lora_layers(model, 2, {"rank": 4, "scale": 20.0, "dropout": 0.0})
    # 3e-3: at 1e-2 this random tiny model trains chaotically and Adam blows float rounding up
    optimizer = optim.Adam(learning_rate=3e-3)
    grad = nn.value_and_grad(model, loss)
    state = [model.state, optimizer.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(*batch):  # noqa: ANN002, ANN202
        (value, _), g = grad(model, *batch)
        optimizer.update(model, g)
        return value

    curve = []
    with attention_within_examples(model):
        for batch in batches:
            value = step(*batch)
            mx.eval(state, value)
            curve.append(value.item())
    return curve


def test_a_packed_compiled_step_trains_the_same_loss_curve_as_the_plain_step(tiny_llama: Path) -> None:
    """The same pairs of examples, as a padded batch of 2 rows (mlx-lm's layout) or packed into
    one row: the loss is the mean over the same targets, so every step's loss agrees."""
    import numpy as np

    mx = import_mlx()
    from engine.models.loss import train_loss

    _, tokenizer = _model(tiny_llama)
    examples = _examples(tokenizer)
    pairs = [(i % len(examples), (i + 1) % len(examples)) for i in range(0, 16, 2)]
    width = 32 * -(-2 * max(len(t) for t, _ in examples) // 32)
    plain, packed = [], []
    for a, b in pairs:
        rows = np.zeros((2, width), np.int32)
        for r, i in enumerate((a, b)):
            rows[r, : len(examples[i][0])] = examples[i][0]
        lengths = [[examples[i][1], len(examples[i][0])] for i in (a, b)]
        plain.append((mx.array(rows), mx.array(lengths)))
        packed.append(tuple(mx.array(x) for x in row_arrays(examples, [[a, b]], width)))
    plain_curve = _curve(tiny_llama, plain, train_loss)
    packed_curve = _curve(tiny_llama, packed, packed_loss)
    assert plain_curve[-1] < plain_curve[0] - 0.5  # it learns
    assert packed_curve == pytest.approx(plain_curve, rel=2e-3)


def test_train_adapter_with_pack_learns_and_counts_only_completion_tokens(tiny_llama: Path, tmp_path: Path) -> None:
    from engine.models.train import train_adapter

    rows = [chat(*QA[i % len(QA)], system=i % 3 == 0) for i in range(16)]
    settings = {"model": str(tiny_llama), "steps_per_report": 1, "steps_per_eval": 4, "val_batches": -1}
    recipe = parse_recipe(
        {
            "name": "t",
            "creator": {"name": "T"},
            "sources": [{"type": "local", "path": str(ROOT / "recipes" / "demo")}],
            "train": {**settings, "pack": True, "batch_size": 1, "max_seq_length": 128, "lora": {"layers": 2}},
        },
        tmp_path,
    )
    result = train_adapter(tiny_llama, rows[:12], rows[12:], recipe.train, tmp_path / "a", 5e-3, 8).summary()
    assert [r["iteration"] for r in result["train_loss"]] == list(range(1, 9))
    assert result["final_val_loss"] < result["val_loss"][0]["loss"]
    assert (tmp_path / "a" / "adapters.safetensors").exists()
    _, tokenizer = _model(tiny_llama)
    from mlx_lm.tuner.datasets import ChatDataset

    data = ChatDataset(rows[:12], tokenizer, mask_prompt=True)
    answers = [len(t) - off for t, off in (data.process(data[i]) for i in range(12))]
    # several examples per row: each step trains on more answer tokens than the longest example has
    assert min(r["trained_tokens"] for r in result["train_loss"][1:]) > max(answers)
    assert json.dumps(result)
