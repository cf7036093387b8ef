"""What a run leaves for people and for the hub tool: metrics.json, curves.png, log.txt, a CSV tracker."""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from accelerate.tracking import GeneralTracker, on_main_process

from scalenet_models.atomic import atomic_path
from scalenet_models.spec import write_json_atomic


def metrics_document(cfg: dict, dataset_name: str, state, final: dict, final_ema: dict | None) -> dict:
    """The run directory's metrics.json (the contract the hub tool reads)."""
    doc = {
        'model': cfg['model'],
        'num_classes': cfg['num_classes'],
        'dataset': dataset_name,
        'img_size': cfg['img_size'],
        'final': final,
        'best': {'top1': state.best_top1, 'epoch': state.best_epoch},
        'epochs': list(state.history),
        'command': cfg['command'],
    }
    if final_ema is not None:
        doc['final_ema'] = final_ema
    if cfg.get('family'):
        doc['family'] = cfg['family']
    return doc


def write_metrics(path: str | os.PathLike, doc: dict) -> None:
    write_json_atomic(path, doc)


def plot_curves(history: list[dict], path: str | os.PathLike, title: str) -> None:
    """Training loss, validation top-1 and learning rate per epoch (matplotlib Agg, atomic write)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    if not history:
        return
    epochs = [h['epoch'] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    axes[0].plot(epochs, [h['train_loss'] for h in history], marker='o')
    axes[0].set_title('training loss')
    axes[1].plot(epochs, [h['top1'] for h in history], marker='o', label='model')
    if any('top1_ema' in h for h in history):
        axes[1].plot(epochs, [h.get('top1_ema') for h in history], marker='s', label='EMA')
        axes[1].legend()
    axes[1].set_title('validation top-1 (%)')
    axes[2].plot(epochs, [h['lr'] for h in history], marker='o')
    axes[2].set_title('learning rate (end of epoch)')
    from matplotlib.ticker import MaxNLocator
    axes[0].ticklabel_format(useOffset=False, axis='y')
    for ax in axes:
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel('epoch')
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)


def make_logger(run_dir: Path, enabled: bool) -> logging.Logger:
    """A logger writing to RUN/log.txt and stdout on the main process; silent elsewhere."""
    logger = logging.getLogger(f'recipes.train.{run_dir.resolve()}')
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    if enabled:
        fmt = logging.Formatter('%(asctime)s %(message)s', '%Y-%m-%d %H:%M:%S')
        for h in (logging.FileHandler(run_dir / 'log.txt'), logging.StreamHandler()):
            h.setFormatter(fmt)
            logger.addHandler(h)
    else:
        logger.addHandler(logging.NullHandler())
    return logger


class CSVTracker(GeneralTracker):
    """A dependency-free Accelerate tracker: one CSV row per ``log`` call (step + values) in RUN/tracker/."""
    name = 'csv'
    requires_logging_directory = True

    def __init__(self, run_name: str, logging_dir: str | os.PathLike):
        super().__init__()
        self.run_name = run_name
        self.dir = Path(logging_dir)
        self.path = self.dir / 'metrics.csv'

    @property
    def tracker(self):
        return self.path

    @on_main_process
    def store_init_configuration(self, values: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.dir / 'hparams.json', {k: v for k, v in values.items()})

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        with open(self.path, 'a', newline='') as f:
            w = csv.writer(f)
            if new:
                w.writerow(['step', 'key', 'value'])
            for k, v in values.items():
                w.writerow([step, k, v])
