"""The GRU sequence model: predicts each event of a session from the events before it."""

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from bastion.detector.features import (
    EFFECT_FLAGS,
    EXIT_CLASSES,
    FLAG_FEATURES,
    MEASURE_FEATURES,
    TOOL_VOCABULARY,
    VECTOR_SIZE,
)

MEASURE_WEIGHT = 5.0
FLAG_PRIOR_LOGIT = -6.0
THREAT_WEIGHT = 3.0
THREAT_FLAGS = frozenset(
    {
        "sensitive_path",
        "has_ip",
        "pipe_to_shell",
        "base64_blob",
        "privilege_escalation",
        "destructive",
        "recon_commands",
        "seccomp_killed",
        "egress_denied",
        "novel_domain",
        "novel_recipient",
        "novel_egress",
        "from_output",
        "injected",
        "novel_outbound",
    }
)
OUTCOME_PARTS = frozenset(
    {
        "exit",
        "timed_out",
        "oom_killed",
        "seccomp_killed",
        "truncated",
        "duration",
        "stdout_bytes",
        "stderr_bytes",
        "egress_allowed",
        "egress_denied",
        "egress_count",
        "egress_bytes",
        "novel_egress",
        "novel_egress_any",
        "output_injection",
    }
)
DENIAL_PARTS = frozenset({"deny_reasons"})
CONTEXT_FLAGS = frozenset(EFFECT_FLAGS)
"""Inputs the model reads but is not surprised by: what a tool does is context (its identity already counts)."""
N_TOOLS = len(TOOL_VOCABULARY)
N_EXITS = len(EXIT_CLASSES)
N_FLAGS = len(FLAG_FEATURES)
N_MEASURES = len(MEASURE_FEATURES)
CONTRIBUTION_NAMES: tuple[str, ...] = ("tool", "exit", *FLAG_FEATURES, *MEASURE_FEATURES)
DENIED_INDEX = N_TOOLS + N_EXITS + FLAG_FEATURES.index("denied")


def _per_part(values: dict[str, float], default: float) -> list[float]:
    """One value per entry of `CONTRIBUTION_NAMES`, taken from `values` or `default`."""
    return [values.get(name, default) for name in CONTRIBUTION_NAMES]


def pick_device() -> torch.device:
    """CUDA when torch can use it, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def single_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run a model this small on one CPU thread: its many small operations only contend with more threads
    (milliseconds each on a busy machine). Nothing changes on a GPU."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _split(vectors: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Tool one-hot, exit one-hot, flags and measures of event vectors [..., D]."""
    tools, exits, flags, measures = vectors.split([N_TOOLS, N_EXITS, N_FLAGS, N_MEASURES], dim=-1)
    return tools, exits, flags, measures


def _flag_surprise(logits: Tensor, target: Tensor) -> Tensor:
    """KL divergence (nats) from the predicted Bernoulli to the observed flag value, per flag."""
    cross = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    clipped = target.clamp(1e-6, 1 - 1e-6)
    entropy = -(clipped * clipped.log() + (1 - clipped) * (1 - clipped).log())
    return (cross - entropy).clamp_min(0.0)


def _cross_entropy(logits: list[float], target: list[float]) -> float:
    """-sum(target * log_softmax(logits)) of one event, in Python numbers."""
    top = max(logits)
    log_total = top + math.log(sum(math.exp(logit - top) for logit in logits))
    return -sum((logit - log_total) * weight for logit, weight in zip(logits, target, strict=True))


def _flag_entropy(target: float) -> float:
    """The entropy (nats) of a Bernoulli with mean `target`, clipped as in `_flag_surprise`."""
    clipped = min(max(target, 1e-6), 1 - 1e-6)
    return -(clipped * math.log(clipped) + (1 - clipped) * math.log(1 - clipped))


_SET_FLAG_ENTROPY = {0.0: _flag_entropy(0.0), 1.0: _flag_entropy(1.0)}


def _flag_surprise_of(logit: float, target: float) -> float:
    """`_flag_surprise` of one flag, in Python numbers (the entropy of a flag that is plainly off or on is known)."""
    cross = max(logit, 0.0) - logit * target + math.log1p(math.exp(-abs(logit)))
    entropy = _SET_FLAG_ENTROPY.get(target)
    if entropy is None:
        entropy = _flag_entropy(target)
    return max(cross - entropy, 0.0)


class SequenceModel(nn.Module):
    """Encodes each event, carries a GRU state through the session, and predicts the next event.

    An event's score is its surprise in nats: cross-entropy of its tool and exit class, Bernoulli
    surprise of each flag (threat indicators weighted `THREAT_WEIGHT`), plus `MEASURE_WEIGHT` x the
    squared error of each measure."""

    def __init__(self, hidden_size: int = 64) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.encoder = nn.Sequential(nn.Linear(VECTOR_SIZE, hidden_size), nn.GELU())
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, VECTOR_SIZE))
        with torch.no_grad():
            flags = slice(N_TOOLS + N_EXITS, N_TOOLS + N_EXITS + N_FLAGS)
            self.head[-1].bias[flags] = FLAG_PRIOR_LOGIT
        weights = _per_part({**dict.fromkeys(THREAT_FLAGS, THREAT_WEIGHT), **dict.fromkeys(CONTEXT_FLAGS, 0.0)}, 1.0)
        outcome = _per_part(dict.fromkeys(OUTCOME_PARTS, 1.0), 0.0)
        denial = _per_part(dict.fromkeys(DENIAL_PARTS, 1.0), 0.0)
        self.part_weight_values, self.outcome_part_values, self.denial_part_values = weights, outcome, denial
        self.register_buffer("part_weights", torch.tensor(weights), persistent=False)
        self.register_buffer("outcome_parts", torch.tensor(outcome), persistent=False)
        self.register_buffer("denial_parts", torch.tensor(denial), persistent=False)

    def encode(self, vectors: Tensor) -> Tensor:
        """The encoder's layers as functional calls on their weights: the same numbers, without a module call per
        layer (which costs as much as the arithmetic for a single event)."""
        linear, gelu = self.encoder
        encoded = nn.functional.linear(vectors, linear.weight, linear.bias)
        return nn.functional.gelu(encoded, approximate=gelu.approximate)

    def predict(self, hidden: Tensor) -> Tensor:
        """Expected next event as [..., D]: tool and exit logits, flag logits, measure values (the head's layers as
        functional calls, like `encode`)."""
        first, gelu, last = self.head
        inner = nn.functional.gelu(nn.functional.linear(hidden, first.weight, first.bias), approximate=gelu.approximate)
        return nn.functional.linear(inner, last.weight, last.bias)

    def step(self, vectors: Tensor, hidden: Tensor) -> Tensor:
        """Advance a batch of session states ([B, H]) by one event each ([B, D]): the GRU's own weights as one cell
        operation (the same numbers as running the GRU one step, at half the cost for a small batch)."""
        gru = self.gru
        return torch.gru_cell(
            self.encode(vectors), hidden, gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0
        )

    def forward(self, vectors: Tensor) -> Tensor:
        """Predictions for every position of padded sessions [B, T, D], each from the state before it."""
        outputs, _ = self.gru(self.encode(vectors))
        start = outputs.new_zeros(outputs.shape[0], 1, outputs.shape[2])
        return self.predict(torch.cat([start, outputs[:, :-1]], dim=1))

    def contributions(self, prediction: Tensor, vectors: Tensor) -> Tensor:
        """Each part's weighted surprise [..., len(CONTRIBUTION_NAMES)]; outcome parts only count when
        the call ran, the denial parts only when it was refused."""
        tool_logits, exit_logits, flag_logits, measures = _split(prediction)
        tool, exit_status, flags, observed = _split(vectors)
        tool_loss = -(tool_logits.log_softmax(dim=-1) * tool).sum(dim=-1, keepdim=True)
        exit_loss = -(exit_logits.log_softmax(dim=-1) * exit_status).sum(dim=-1, keepdim=True)
        flag_loss = _flag_surprise(flag_logits, flags)
        measure_loss = MEASURE_WEIGHT * (measures - observed).pow(2)
        parts = torch.cat([tool_loss, exit_loss, flag_loss, measure_loss], dim=-1)
        denied = vectors[..., DENIED_INDEX : DENIED_INDEX + 1]
        relevant = 1.0 - self.outcome_parts * denied - self.denial_parts * (1.0 - denied)
        return parts * relevant * self.part_weights

    def contributions_of_one(self, prediction: list[float], vector: list[float]) -> list[float]:
        """`contributions` of a single event in plain Python numbers (equal up to float32 rounding): for one event,
        starting the tensor operations costs several times the arithmetic."""
        tool_end, exit_end, flag_end = N_TOOLS, N_TOOLS + N_EXITS, N_TOOLS + N_EXITS + N_FLAGS
        parts = [
            _cross_entropy(prediction[:tool_end], vector[:tool_end]),
            _cross_entropy(prediction[tool_end:exit_end], vector[tool_end:exit_end]),
            *map(_flag_surprise_of, prediction[exit_end:flag_end], vector[exit_end:flag_end]),
            *(MEASURE_WEIGHT * (p - o) ** 2 for p, o in zip(prediction[flag_end:], vector[flag_end:], strict=True)),
        ]
        denied = vector[DENIED_INDEX]
        return [
            part * (1.0 - outcome * denied - denial * (1.0 - denied)) * weight
            for part, outcome, denial, weight in zip(
                parts, self.outcome_part_values, self.denial_part_values, self.part_weight_values, strict=True
            )
        ]

    def scores(self, prediction: Tensor, vectors: Tensor) -> Tensor:
        """Anomaly score of each event: how surprising it was given the session before it."""
        return self.contributions(prediction, vectors).sum(dim=-1)
