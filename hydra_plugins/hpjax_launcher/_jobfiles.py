"""What a templated job leaves, as Hydra's `run_job` leaves it: its directory with the `.hydra/`
files `_fast.Templates` rendered, its log file (a handler made like the first job's), and the
`JobReturn` the sweeper reads (its configs loaded from those files only when asked for)."""

import logging
import os
from typing import Any, Optional

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from ._fast import FastJob, Ineligible


def write_hydra_files(job: FastJob, subdir: str = ".hydra", writer: Any = None) -> None:
    """The job's directory (made here) with its `.hydra/` files; by `writer`'s thread if given."""
    if writer is not None:
        writer.submit(_write_files, os.path.join(job.output_dir, subdir), job.files)
    else:
        _write_files(os.path.join(job.output_dir, subdir), job.files)


def _write_files(directory: str, files: dict) -> None:
    from hpjax.engine import naming_file

    os.makedirs(directory, exist_ok=True)
    for name, text in files.items():
        path = os.path.join(directory, name)
        with naming_file(path), open(path, "wb") as f:  # a full disk's error names the file
            f.write(text.encode())


# -- a job's log file -----------------------------------------------------------------------------
class JobLogFiles:
    """The root logger's file handlers that Hydra's job logging opened in the first job's
    directory, reopened in each next job's (same formatter, level, filters, mode)."""

    def __init__(self, first_dir: str, writer: Any = None) -> None:
        self.dir, self.writer = first_dir, writer
        root = logging.getLogger()
        self.slots = [i for i, h in enumerate(root.handlers) if isinstance(
            h, logging.FileHandler) and os.path.dirname(h.baseFilename) == first_dir]
        for name in logging.Logger.manager.loggerDict:
            logger = logging.getLogger(name)
            if any(isinstance(h, logging.FileHandler) and h.baseFilename.startswith(first_dir)
                   for h in getattr(logger, "handlers", ())):
                raise Ineligible(f"logger {name} logs to a job's file")

    def move(self, job_dir: str) -> None:
        if job_dir == self.dir:
            return
        root = logging.getLogger()
        for i in self.slots:
            old = root.handlers[i]
            path = os.path.join(job_dir, os.path.basename(old.baseFilename))
            new = logging.FileHandler(path, mode=old.mode, encoding=old.encoding,
                                      delay=old.delay) if self.writer is None else \
                WrittenFileHandler(self.writer, path, mode=old.mode, encoding=old.encoding,
                                   delay=old.delay)
            new.setLevel(old.level)
            new.setFormatter(old.formatter)
            for f in old.filters:
                new.addFilter(f)
            root.handlers[i] = new
            old.close()
        self.dir = job_dir


class WrittenFileHandler(logging.FileHandler):
    """A `logging.FileHandler` whose file a `hpjax.results.Writer` writes: each record is
    formatted here and appended by the writer's thread, after the files asked for before it
    (the job's directory first)."""

    def __init__(self, writer: Any, filename: str, mode: str = "a",
                 encoding: Optional[str] = None, delay: bool = False) -> None:
        super().__init__(filename, mode, encoding, delay=True)
        self.delay, self.writer, self._next_mode = delay, writer, mode
        if not delay:  # the file exists from now on, as FileHandler opens it
            self._append("")

    def _append(self, text: str) -> None:
        self.writer.append(self.baseFilename, text, self._next_mode, self.encoding)
        self._next_mode = "a"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001  (as logging's handlers do)
            self.handleError(record)
            return
        self._append(text)


class FastReturn(JobReturn):
    """A job's return whose configs are read back from its `.hydra/` files when asked for; it
    carries its job directory and result for the sweeper."""

    output_dir: Optional[str] = None
    result: Any = None

    @property
    def cfg(self) -> Any:
        return self._load("config.yaml")

    @cfg.setter
    def cfg(self, value: Any) -> None:
        pass

    @property
    def hydra_cfg(self) -> Any:
        return self._load("hydra.yaml")

    @hydra_cfg.setter
    def hydra_cfg(self, value: Any) -> None:
        pass

    def _load(self, name: str) -> Any:
        if self.output_dir is None:
            return None
        return OmegaConf.load(os.path.join(self.output_dir, ".hydra", name))


def job_return(job: FastJob, status: JobStatus, value: Any, result: Any,
               cwd: Optional[str] = None) -> FastReturn:
    ret = FastReturn(overrides=list(job.overrides), working_dir=cwd or os.getcwd(),
                     task_name=job.template.task_name, status=status)
    ret.return_value, ret.output_dir, ret.result = value, job.output_dir, result
    return ret
