"""Imports Ultralytics the only way that works here: offline, with a private config folder and a font.

Ultralytics, left to itself, checks the network, auto-installs packages, writes its settings to
``~/.config/Ultralytics`` (with telemetry ``sync`` on and the runs folder under the current directory),
downloads ``Arial.ttf`` for its plots, sets ``OMP_NUM_THREADS=1`` on import and
``torch.set_num_threads(cpu_count - 1)`` whenever it selects a CPU device (one thread on a two-core machine).
:func:`import_ultralytics` undoes all of that. Ultralytics reads its settings once, at import: the first
call in a process decides the folder.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hemascope.logs import get_logger

log = get_logger(__name__)
DEFAULT_CONFIG_DIR = Path("~/.cache/hemascope/ultralytics")
FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
# Settings written into the private settings.json: no telemetry, no experiment-tracker callbacks.
_SETTINGS = {
    "sync": False,
    "hub": False,
    "clearml": False,
    "comet": False,
    "dvc": False,
    "mlflow": False,
    "neptune": False,
    "raytune": False,
    "tensorboard": False,
    "wandb": False,
    "vscode_msg": False,
    "openvino_msg": False,
}


@dataclass(frozen=True)
class YoloEnv:
    ultralytics: Any  # the module
    config_dir: Path  # YOLO_CONFIG_DIR; Ultralytics uses <config_dir>/Ultralytics
    device: str  # "0" (first GPU) or "cpu"
    threads: int


def _install_fonts(user_dir: Path) -> None:
    """Copies matplotlib's DejaVuSans.ttf to the names Ultralytics would otherwise download."""
    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    user_dir.mkdir(parents=True, exist_ok=True)
    for name in FONT_NAMES:
        target = user_dir / name
        if not target.is_file() or target.stat().st_size != font.stat().st_size:
            shutil.copyfile(font, target)


def _resolve_config_dir(config_dir: Path | None) -> Path:
    if config_dir is not None:
        return config_dir.expanduser().absolute()
    configured = os.environ.get("YOLO_CONFIG_DIR")
    return Path(configured).expanduser().absolute() if configured else DEFAULT_CONFIG_DIR.expanduser()


def _restore_threads(ultralytics_torch_utils: Any) -> int:
    import torch

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    # select_device() calls torch.set_num_threads(NUM_THREADS) with NUM_THREADS = cpu_count - 1 on every CPU
    # run (train, val, export): make it use every core. Data-loading thread pools keep Ultralytics' own value.
    ultralytics_torch_utils.NUM_THREADS = threads
    return threads


def select_device() -> str:
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def prepare_environment(config_dir: Path | None = None) -> Path:
    """Sets Ultralytics' environment for offline use; call before ``import ultralytics``. Returns the folder.

    ``config_dir`` (else ``$YOLO_CONFIG_DIR``, else ``~/.cache/hemascope/ultralytics``) becomes
    ``YOLO_CONFIG_DIR``; its ``Ultralytics/`` subfolder receives the settings file and the fonts.
    """
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "false"
    wanted = _resolve_config_dir(config_dir)
    os.environ["YOLO_CONFIG_DIR"] = str(wanted)
    _install_fonts(wanted / "Ultralytics")
    return wanted


def import_ultralytics(config_dir: Path | None = None) -> YoloEnv:
    """Prepares the offline environment, imports ``ultralytics`` and returns it with the device to use.

    If Ultralytics is already imported its config folder is kept (it reads its settings at import) and only
    the fonts are checked. Afterwards torch uses every core, also after Ultralytics selects a CPU device.
    """
    already = "ultralytics" in sys.modules
    if not already:
        prepare_environment(config_dir)
    # Imported by name, as Any: Ultralytics' own annotations do not pass mypy's strict mode.
    ultralytics: Any = importlib.import_module("ultralytics")
    utils: Any = importlib.import_module("ultralytics.utils")
    torch_utils: Any = importlib.import_module("ultralytics.utils.torch_utils")

    user_dir = Path(utils.USER_CONFIG_DIR)
    if already and config_dir is not None and user_dir.parent != _resolve_config_dir(config_dir):
        log.warning("ultralytics_config_dir_fixed", wanted=str(config_dir), used=str(user_dir.parent))
    _install_fonts(user_dir)
    if not already:
        settings = utils.SETTINGS
        wanted_settings: dict[str, object] = {
            **_SETTINGS,  # relative paths must never land in the current directory (the repository)
            "runs_dir": str(user_dir.parent / "runs"),
            "weights_dir": str(user_dir.parent / "weights"),
            "datasets_dir": str(user_dir.parent / "datasets"),
        }
        changed = {
            k: v for k, v in wanted_settings.items() if k in settings.defaults and settings.get(k) != v
        }
        if changed:
            settings.update(changed)
    threads = _restore_threads(torch_utils)
    _restore_pillow_open()
    return YoloEnv(ultralytics, user_dir.parent, select_device(), threads)


def _restore_pillow_open() -> None:
    """Undo Ultralytics' process-wide patch of ``PIL.Image.open``.

    On import Ultralytics replaces ``Image.open`` with a wrapper that, for any file Pillow cannot identify,
    tries to install and import ``pi-heif`` (HEIC support) and raises ``ModuleNotFoundError`` offline. That
    would turn "not an image" into a crash for every Pillow user in the process, our image decoder included.
    We need no HEIC here, so Pillow's own function is put back.
    """
    from PIL import Image

    patches = sys.modules.get("ultralytics.utils.patches")
    original = getattr(patches, "_image_open", None)
    if original is not None and Image.open is not original:
        Image.open = original
