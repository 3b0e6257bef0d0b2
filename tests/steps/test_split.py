"""split on crafted `augment` tables: grouping, determinism, no leaks, and JSONL mlx-lm can load."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_curate import make_ctx, write_table

from engine.pipeline.store import Store
from engine.steps import augment, split
from helpers.pipeline import run_pipeline


def originals(videos: int, per_video: int, tags: tuple[str, ...] = ("sleep",)) -> list[dict]:
    rows = []
    for v in range(videos):
        for q in range(per_video):
            oid = f"v{v:02d}q{q}"
            rows.append(
                {
                    "id": oid,
                    "origin_id": oid,
                    "video_id": f"v{v:02d}",
                    "title": f"Talk {v}",
                    "kind": "original",
                    "question": f"Question {q} of talk {v}?",
                    "answer": f"Answer {q} of talk {v}.",
                    "tags": [tags[v % len(tags)]],
                    "status": "ok",
                    "reason": None,
                }
            )
    return rows


def with_augmented(rows: list[dict]) -> list[dict]:
    extra = []
    for r in rows:
        for kind in ("paraphrase", "short"):
            extra.append({**r, "id": f"{r['id']}-{kind}", "kind": kind, "question": "Re: " + r["question"]})
    failed = {**rows[0], "id": "broken", "kind": "long", "answer": "", "status": "failed", "reason": "x"}
    return rows + extra + [failed]


def run_split(
    tmp_path: Path, rows: list[dict], split_cfg: dict | None = None, name: str = "s"
) -> tuple[list[dict], object]:
    base = tmp_path / name
    base.mkdir()
    extra = {"split": split_cfg or {}}
    with Store(base / "store.duckdb") as store:
        table = write_table(store, augment, "augment-key", rows)
        ctx, cfg = make_ctx(base, store, "split", extra)
        out = split.run(ctx, {"augment": table}, cfg)
        write_table(store, split, "split-key", out)
    return out, ctx


def sides_by_video(rows: list[dict]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r["status"] == "ok":
            found[r["video_id"]].add(r["split"])
    return found


def test_no_video_in_two_splits_and_augmented_rows_follow_origin(tmp_path: Path) -> None:
    out, ctx = run_split(tmp_path, with_augmented(originals(10, 3)), {"valid": 0.2, "test": 0.1, "seed": 3})
    assert all(len(s) == 1 for s in sides_by_video(out).values())
    origin_side = {r["id"]: r["split"] for r in out if r["kind"] == "original"}
    assert all(r["split"] == origin_side[r["origin_id"]] for r in out if r["status"] == "ok")
    assert ctx.metrics["videos"] == {"train": 7, "valid": 2, "test": 1}
    assert ctx.metrics["valid"] == 2 * 3 * 3  # 2 videos x 3 questions x (original + 2 variants)
    assert "broken" not in {r["id"] for r in out}  # failed upstream rows are not in the dataset


def test_split_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    rows = with_augmented(originals(12, 2))
    first, _ = run_split(tmp_path, rows, {"valid": 0.25, "seed": 7}, "a")
    again, _ = run_split(tmp_path, list(reversed(rows)), {"valid": 0.25, "seed": 7}, "b")
    other, _ = run_split(tmp_path, rows, {"valid": 0.25, "seed": 8}, "c")

    def sides(out: list[dict]) -> dict[str, str]:
        return {r["id"]: r["split"] for r in out}

    assert sides(first) == sides(again)
    assert sides(first) != sides(other)
    data = [(tmp_path / n / "work-split" / "data" / "valid.jsonl").read_text() for n in "ab"]
    assert data[0] == data[1]


def test_two_videos_always_give_a_valid_example_and_one_video_splits_rows(tmp_path: Path) -> None:
    out, _ = run_split(tmp_path, originals(2, 2), {"valid": 0.0}, "two")
    assert {r["split"] for r in out} == {"train", "valid"}
    assert all(len(s) == 1 for s in sides_by_video(out).values())
    single, _ = run_split(tmp_path, with_augmented(originals(1, 4)), {"valid": 0.25}, "one")
    origin_side = {r["id"]: r["split"] for r in single if r["kind"] == "original"}
    assert sorted(origin_side.values()) == ["train", "train", "train", "valid"]
    assert all(r["split"] == origin_side[r["origin_id"]] for r in single)


def test_tag_stratified_split_draws_valid_from_every_tag(tmp_path: Path) -> None:
    rows = originals(20, 1, tags=("sleep", "sleep", "diet", "diet", "heart"))  # 8/8/4 videos per tag
    out, _ = run_split(tmp_path, rows, {"valid": 0.25, "by": "tag", "seed": 1})
    side = {r["id"]: r["split"] for r in out}
    valid_tags = [o["tags"][0] for o in rows if side[o["id"]] == "valid"]
    assert sorted(set(valid_tags)) == ["diet", "heart", "sleep"] and len(valid_tags) == 5
    assert all(len(s) == 1 for s in sides_by_video(out).values())


def test_random_split_is_by_row(tmp_path: Path) -> None:
    out, ctx = run_split(tmp_path, originals(2, 10), {"valid": 0.5, "by": "random", "seed": 0})
    assert ctx.metrics["train"] == ctx.metrics["valid"] == 10
    assert any(len(s) == 2 for s in sides_by_video(out).values())  # rows, not videos


def test_jsonl_has_system_prompt_and_loads_with_mlx_lm(tmp_path: Path) -> None:
    from engine.models.blas import ensure_fast_blas
    from helpers.tiny_model import make_tiny_llama

    rows = with_augmented(originals(6, 2))
    rows[0]["answer"] = "Use {braces} and **bold**\n\n- a list"
    out, ctx = run_split(tmp_path, rows, {"valid": 0.2, "test": 0.2, "system_prompt": "You are {creator}."})
    folder = ctx.work_dir / "data"
    records = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    assert len(records) == ctx.metrics["train"]
    assert [m["role"] for m in records[0]["messages"]] == ["system", "user", "assistant"]
    assert records[0]["messages"][0]["content"] == "You are Dr. Test."
    assert (ctx.work_dir / "plots" / "train_lengths.png").is_file()

    ensure_fast_blas()
    import mlx_lm
    from mlx_lm.tuner.datasets import load_dataset

    model_dir = make_tiny_llama(tmp_path / "tiny")
    _, tokenizer = mlx_lm.load(str(model_dir))
    args = SimpleNamespace(data=str(folder), train=True, test=True, mask_prompt=True, hf_dataset=False)
    train, valid, test = load_dataset(args, tokenizer)
    assert (len(train), len(valid), len(test)) == (ctx.metrics["train"], ctx.metrics["valid"], ctx.metrics["test"])
    tokens, offset = train.process(train[0])
    assert 0 < offset < len(tokens)  # the prompt is masked, the answer is trained on
    assert tokenizer.decode(tokens[offset:]).strip().startswith(train[0]["messages"][-1]["content"][:10])


@pytest.mark.parametrize(
    "valid,test,videos,expected",
    [
        (0.15, 0.0, 10, {"valid": 2, "test": 0, "train": 8}),
        (0.5, 0.5, 3, {"valid": 1, "test": 1, "train": 1}),
        (0.0, 0.0, 1, {"valid": 0, "test": 0, "train": 1}),
    ],
)
def test_allocation_counts(valid: float, test: float, videos: int, expected: dict) -> None:
    cfg = SimpleNamespace(valid=valid, test=test, seed=0)
    sides = split._allocate([f"v{i}" for i in range(videos)], cfg)
    assert {k: sides.count(k) for k in ("valid", "test", "train")} == expected


def test_pipeline_writes_split_files_into_the_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import duckdb

    result = run_pipeline(tmp_path, monkeypatch, until="split")
    assert result.executed[-3:] == ["curate", "augment", "split"]
    train = (result.run_dir / "data" / "train.jsonl").read_text().splitlines()
    valid = (result.run_dir / "data" / "valid.jsonl").read_text().splitlines()
    assert len(train) + len(valid) == 12 and len(valid) in (4, 8)  # 6 Q&A + 6 paraphrases, by video
    assert json.loads(valid[0])["messages"][0] == {"role": "system", "content": "You are Dr. Test."}
    with duckdb.connect(str(result.run_dir / "data.duckdb"), read_only=True) as con:
        sides = con.execute("SELECT video_id, count(DISTINCT split) FROM split GROUP BY 1").fetchall()
    assert len(sides) == 3 and all(n == 1 for _, n in sides)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["curate"]["kept"] == 6 and metrics["augment"]["augmented"] == 6
    assert metrics["split"]["videos"]["valid"] >= 1


def test_system_prompt_is_rendered_like_the_validated_template(tmp_path: Path) -> None:
    """{{ }} are literal braces (as validation and export's Modelfile read them), not kept doubled."""
    _, ctx = run_split(tmp_path, originals(3, 1), {"system_prompt": "You are {creator}. Answer in {{plain}} text."})
    first = json.loads((ctx.work_dir / "data" / "train.jsonl").read_text().splitlines()[0])
    assert first["messages"][0]["content"] == "You are Dr. Test. Answer in {plain} text."
