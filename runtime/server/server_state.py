"""ServerState: what every route reads (engine, client, args, names), stored on `app.state.server`."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from fastapi import Request

from ..default_model import DEFAULT_MODEL_NAME
from .api_error import ApiError
from .args import ServerArgs
from .engine_client import EngineClient
from .metrics import ServerMetrics


@dataclass
class ServerState:
    engine: object
    args: ServerArgs
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    started_at: float = field(default_factory=time.time)
    is_shutting_down: bool = False  # set on SIGTERM/SIGINT; requests cut at the deadline end quietly

    def __post_init__(self):
        self.client = EngineClient(self.engine, self.metrics)

    @property
    def model_path(self) -> str:
        return self.engine.config.model_path or self.engine.model_dir

    @property
    def served_model_name(self) -> str:
        cfg = self.engine.config
        if cfg.served_model_name:
            return cfg.served_model_name
        return DEFAULT_MODEL_NAME if cfg.model_path is None else cfg.model_path

    def accepted_model_names(self) -> set:
        names = {"default", self.served_model_name, self.model_path, self.engine.model_dir,
                 os.path.basename(os.path.normpath(self.engine.model_dir))}
        return {n for n in names if n}

    def check_model(self, name) -> None:
        """OpenAI routes: an unknown model name is a 404, as OpenAI answers it."""
        if name is None:
            return
        if name not in self.accepted_model_names():
            raise ApiError(404, f"model: the model {name!r} does not exist on this server; it serves "
                                f"{self.served_model_name!r}", param="model", code="model_not_found")


def server_state(request: Request) -> ServerState:
    return request.app.state.server
