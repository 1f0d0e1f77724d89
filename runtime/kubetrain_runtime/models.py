"""One factory for the four model families. The input shape comes from the data: the
number of feature values after preprocessing, checked against the model section here so
that a misfit (a CNN on 13 wine features) fails before any worker starts."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kubetrain_runtime.plan import TrainPlan

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class ConvNet(nn.Module):
    """Conv-ReLU-MaxPool blocks, then Dropout-Dense-ReLU-Dropout-Dense."""

    def __init__(self, shape: list[int], spec: dict[str, Any], classes: int) -> None:
        super().__init__()
        self.shape = tuple(shape)
        channels, height, width = shape
        blocks: list[nn.Module] = []
        for out, kernel in zip(spec["channels"], spec["kernelSizes"], strict=True):
            blocks += [nn.Conv2d(channels, out, kernel, padding="same"), nn.ReLU()]
            if height >= 2 and width >= 2:
                blocks.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            channels = out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(spec["dropout"]),
            nn.Linear(channels * height * width, spec["hiddenUnits"]),
            nn.ReLU(),
            nn.Dropout(spec["dropout"]),
            nn.Linear(spec["hiddenUnits"], classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(x.shape[0], *self.shape)))


class SequenceNet(nn.Module):
    """An LSTM or GRU over a window ``[time, features]`` (or a row's values as one
    feature). The head reads the last step (and, when bidirectional, the backward
    direction's last step, which is the first position), or the mean or maximum over
    every step (``pooling``)."""

    def __init__(self, shape: list[int], spec: dict[str, Any], outputs: int) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.hidden = spec["hiddenSize"]
        self.bidirectional = spec["bidirectional"]
        cell = nn.LSTM if spec["cell"] == "lstm" else nn.GRU
        self.rnn = cell(
            input_size=shape[1],
            hidden_size=self.hidden,
            num_layers=spec["layers"],
            batch_first=True,
            bidirectional=self.bidirectional,
            dropout=spec["dropout"] if spec["layers"] > 1 else 0.0,
        )
        self.head = nn.Linear(self.hidden * (2 if self.bidirectional else 1), outputs)
        self.pooling = spec.get("pooling", "last")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.view(x.shape[0], *self.shape))
        if self.pooling == "mean":
            return self.head(out.mean(dim=1))
        if self.pooling == "max":
            return self.head(out.max(dim=1).values)
        if self.bidirectional:
            last = torch.cat([out[:, -1, : self.hidden], out[:, 0, self.hidden :]], dim=1)
        else:
            last = out[:, -1]
        return self.head(last)


class Vae(nn.Module):
    """A dense variational autoencoder; the decoder mirrors the encoder. ``forward``
    returns the decoder's output (logits or means), the posterior mean and log-variance."""

    def __init__(self, features: int, spec: dict[str, Any]) -> None:
        super().__init__()
        self.latent = spec["latentDim"]
        encoder: list[nn.Module] = []
        width = features
        for units in spec["hiddenUnits"]:
            encoder += [nn.Linear(width, units), nn.ReLU()]
            width = units
        self.encoder = nn.Sequential(*encoder)
        self.mu = nn.Linear(width, self.latent)
        self.logvar = nn.Linear(width, self.latent)
        decoder: list[nn.Module] = []
        width = self.latent
        for units in reversed(spec["hiddenUnits"]):
            decoder += [nn.Linear(width, units), nn.ReLU()]
            width = units
        decoder.append(nn.Linear(width, features))
        self.decoder = nn.Sequential(*decoder)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.encoder(x)
        mu, logvar = self.mu(hidden), self.logvar(hidden)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


class DenseNet(nn.Module):
    """The classic Keras MNIST classifier: Dense-Dropout stacks, then the output layer."""

    def __init__(self, features: int, spec: dict[str, Any], outputs: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = features
        for units in spec["hiddenUnits"]:
            layers += [
                nn.Linear(width, units),
                _ACTIVATIONS[spec["activation"]](),
                nn.Dropout(spec["dropout"]),
            ]
            width = units
        layers.append(nn.Linear(width, outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_model(plan: TrainPlan) -> nn.Module:
    """The model a plan describes; also what a custom ``trainFunction`` may call."""
    spec = plan.section
    if plan.model_type == "cnn":
        return ConvNet(plan.input_shape, spec, plan.num_outputs)
    if plan.model_type == "rnn":
        return SequenceNet(plan.input_shape, spec, plan.num_outputs)
    if plan.model_type == "vae":
        return Vae(plan.num_features, spec)
    return DenseNet(plan.num_features, spec, plan.num_outputs)


def dry_run(plan: TrainPlan) -> int:
    """Build the model and push two zero samples through it, on the driver, so that a shape
    problem surfaces as a SpecError before workers start. Returns the parameter count."""
    model = build_model(plan)
    model.eval()
    with torch.no_grad():
        model(torch.zeros(2, plan.num_features))
    return sum(p.numel() for p in model.parameters())
