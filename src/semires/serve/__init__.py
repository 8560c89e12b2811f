"""``semires serve``: a local web app to look at a model and at a run (docs/serve.md).

- :mod:`semires.serve.samples`: what is shown, without the UI (library calls only);
- :mod:`semires.serve.app`: the Gradio page.

Gradio is an optional dependency (``pip install 'semires[serve]'``); it is imported only here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from semires.errors import CheckpointError, SemiresError


def require_gradio() -> Any:
    """The gradio module, or a one-line :class:`SemiresError` saying how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local app: no telemetry
    try:
        import gradio
    except ImportError as exc:
        raise SemiresError(
            "semires serve needs gradio: pip install 'semires[serve]' (or pip install gradio)"
        ) from exc
    return gradio


def create_app(
    checkpoint: str | Path,
    run: str | Path | None = None,
    *,
    device: str = "auto",
    limit: int = 300,
) -> Any:
    """The web app (a ``gradio.Blocks``) for a checkpoint, and a run folder's pseudo-labels.

    ``limit``: at most this many test samples and unlabeled samples are listed.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():  # before the slow imports
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    require_gradio()
    from semires.data import load_index
    from semires.evaluate.predict import load
    from semires.serve.app import build_app
    from semires.serve.samples import RunView, check_same_model, test_refs
    from semires.train.config import DataConfig
    from semires.utils.typed_config import load_dataclass

    view = RunView.open(run, device=device, limit=limit) if run is not None else None
    seg = load(checkpoint, device=device)
    if view is not None:
        check_same_model(seg, view.teacher, checkpoint, Path(run))
        data, index = view.plan.data_config(), view.index
    else:
        data, index = DataConfig(), None
        try:  # the dataset the checkpoint was trained on, when it is still there
            if seg.config.get("data"):
                data = load_dataclass(DataConfig, seg.config["data"], prefix="data")
                index = load_index(data.spec())
        except SemiresError as err:
            print(f"no test images to pick from ({err}); upload images instead")
    refs = test_refs(index, data.test_splits, limit) if index is not None else []
    return build_app(seg, index=index, test_refs=refs, run=view, title=f"semires · {checkpoint}")


def check_address(host: str, port: int) -> None:
    """The address to serve on, checked before the app is built: ``host`` resolves to an
    address of this machine and ``port`` is free there (one line naming which is wrong)."""
    import errno
    import socket

    if not 0 < port < 65536:
        raise SemiresError(f"--port {port}: expected a port number in 1..65535")
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise SemiresError(
            f"--host {host!r}: cannot resolve this name ({reason}); give an address of this "
            "machine, e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
        ) from None
    family, kind, proto, _, address = found[0]
    with socket.socket(family, kind, proto) as sock:
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SemiresError(
                    f"--port {port}: already in use on {host}; pick another --port"
                ) from None
            if exc.errno == errno.EACCES:
                raise SemiresError(
                    f"--port {port}: not allowed (ports below 1024 need root); pick another --port"
                ) from None
            raise SemiresError(
                f"--host {host!r}: cannot serve on it ({exc.strerror}); give an address of "
                "this machine, e.g. 127.0.0.1 or 0.0.0.0"
            ) from None


def serve(
    checkpoint: str | Path,
    run: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    device: str = "auto",
    limit: int = 300,
) -> None:
    """Build the app and serve it until interrupted (the address is checked first, and
    Gradio's own start-up lines, such as its hint about public share links, are left out)."""
    check_address(host, port)
    app = create_app(checkpoint, run, device=device, limit=limit)
    try:
        app.launch(
            server_name=host,
            server_port=port,
            ssr_mode=False,
            quiet=True,
            prevent_thread_lock=True,
        )
    except OSError as exc:
        raise SemiresError(f"cannot serve on {host}:{port} ({exc}); pick another --port") from exc
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"serving on http://{shown}:{port} (Ctrl-C to stop)", flush=True)
    app.block_thread()
