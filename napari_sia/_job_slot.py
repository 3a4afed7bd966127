"""One background job of the widget, written once: its worker, progress with an ETA, Stop, status and outcome.

The widget runs four jobs (train, inspect, pseudo-labels, whole slide), one slot each. A slot owns its Start
and Stop buttons, a progress bar that shows time elapsed while the job prepares (loading a model, reading
images) and steps done with the time left once it reports progress, and one status line. Its state is data
(:class:`JobState`, :attr:`JobSlot.error`), never read back from the status text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum
from typing import Any, Optional

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from sia_core.errors import SIAError

__all__ = ["JobState", "JobSlot", "format_duration"]


class JobState(str, Enum):
    """Where a job is. ``DONE``, ``STOPPED`` and ``FAILED`` are how the last run ended."""

    IDLE = "idle"
    PREPARING = "preparing"
    RUNNING = "running"
    STOPPING = "stopping"
    DONE = "done"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def active(self) -> bool:
        return self in (JobState.PREPARING, JobState.RUNNING, JobState.STOPPING)


class _ClosingGeneratorWorker(GeneratorWorker):
    """A GeneratorWorker that closes its generator, in the worker thread, when ``quit()`` aborts it.

    superqt's GeneratorWorker only stops pulling from the generator on ``quit()`` and leaves it suspended;
    its ``finally`` blocks (``train_iter``'s checkpoint) would then run whenever it is garbage collected, in
    any thread, or never. Closing it here writes the checkpoint before ``finished`` is emitted.
    """

    def work(self) -> Any:
        try:
            return super().work()
        finally:
            if self.abort_requested:
                gen = getattr(self, "_gen", None)
                if gen is not None:
                    gen.close()


def format_duration(seconds: float) -> str:
    """``0:42``, ``12:05``, ``1:02:03``."""
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class JobSlot(QWidget):
    """Start/Stop buttons, progress bar and status line of one background job, and the job's lifecycle.

    Args:
        start_text: label of the Start button.
        on_start: called when Start is clicked (it checks its inputs and calls :meth:`run`).
        start_tip, stop_tip: tooltips; ``stop_tip=None`` makes a job without Stop (one quick call).
        unit: what progress counts ("step", "image", "tile"), used in the texts.
        preparing: what the job does before its first progress report (shown with the time elapsed).
    """

    progressed = Signal(int, int)
    """(done, total); :meth:`report` emits it from any thread, the slot updates itself on the GUI thread."""
    ended = Signal(object)
    """The final :class:`JobState`, after the job's own ``on_end`` ran."""

    def __init__(
        self,
        start_text: str,
        on_start: Callable[[], Any],
        start_tip: str = "",
        stop_tip: Optional[str] = None,
        unit: str = "step",
        preparing: str = "preparing",
        parent: Optional[QWidget] = None,
    ) -> None:
        super().__init__(parent)
        self.unit = unit
        self.preparing_text = preparing
        self.state = JobState.IDLE
        self.error: Optional[str] = None
        """Message of the last run's error (None when it did not fail)."""
        self.worker: Any = None
        self._t0 = 0.0
        self._first: Optional[tuple[float, int]] = None
        self._on_yield: Optional[Callable[[Any], None]] = None
        self._on_return: Optional[Callable[[Any], None]] = None
        self._on_end: Optional[Callable[[JobState], None]] = None

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.start_button = QPushButton(start_text)
        self.start_button.setToolTip(start_tip)
        self.start_button.clicked.connect(lambda: on_start())
        row.addWidget(self.start_button, 1)
        self.stop_button: Optional[QPushButton] = None
        if stop_tip is not None:
            self.stop_button = QPushButton("Stop")
            self.stop_button.setToolTip(stop_tip)
            self.stop_button.setEnabled(False)
            self.stop_button.clicked.connect(self.stop)
            row.addWidget(self.stop_button)
        layout.addLayout(row)
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.bar.setVisible(False)
        layout.addWidget(self.bar)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setVisible(False)
        layout.addWidget(self.status)
        self._clock = QTimer(self)
        self._clock.setInterval(1000)
        self._clock.timeout.connect(self._tick)
        self.progressed.connect(self._on_progress)

    # ------------------------------------------------------------------------------------------ state
    @property
    def busy(self) -> bool:
        """A worker is running (preparing, running or stopping)."""
        return self.worker is not None

    def set_status(self, text: str) -> None:
        self.status.setText(text)
        self.status.setVisible(bool(text))

    def run(
        self,
        func: Callable[..., Any],
        *args: Any,
        status: str = "",
        generator: bool = False,
        on_yield: Optional[Callable[[Any], None]] = None,
        on_return: Optional[Callable[[Any], None]] = None,
        on_end: Optional[Callable[[JobState], None]] = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``func(*args, **kwargs)`` in a thread worker (a generator when ``generator``).

        ``on_yield`` gets every yielded value, ``on_return`` the return value, ``on_end`` the final state
        (DONE, STOPPED or FAILED), all on the GUI thread. Returns the worker, or None when one is running.
        """
        if self.busy:
            return None
        self.state, self.error = JobState.PREPARING, None
        self._t0, self._first = time.monotonic(), None
        self._on_yield, self._on_return, self._on_end = on_yield, on_return, on_end
        connect: dict[str, Any] = {"errored": self._on_error, "finished": self._on_finished}
        if on_yield is not None:
            connect["yielded"] = self._yielded
        if on_return is not None:
            connect["returned"] = self._returned
        worker = create_worker(
            func,
            *args,
            _worker_class=_ClosingGeneratorWorker if generator else None,
            _connect=connect,
            _start_thread=False,
            **kwargs,
        )
        self.worker = worker
        self.start_button.setEnabled(False)
        if self.stop_button is not None:
            self.stop_button.setEnabled(True)
        self.bar.setRange(0, 1)  # until the first progress report the text counts the time elapsed
        self.bar.setValue(0)
        self.bar.setVisible(True)
        self._tick()
        self._clock.start()
        self.set_status(status)
        worker.start()
        return worker

    def report(self, done: int, total: int) -> None:
        """Progress callback for the job's function; safe to call from the worker thread."""
        self.progressed.emit(int(done), int(total))

    def should_stop(self) -> bool:
        """Stop was pressed (polled by the job's function between steps, from the worker thread)."""
        worker = self.worker
        return bool(worker is not None and worker.abort_requested)

    def stop(self) -> None:
        """Ask the job to stop after its current step (what it wrote stays)."""
        if self.worker is None:
            return
        self.worker.quit()
        self.state = JobState.STOPPING
        if self.stop_button is not None:
            self.stop_button.setEnabled(False)
        self.set_status(f"stopping after this {self.unit}...")

    def close_worker(self) -> None:
        if self.worker is not None:
            self.worker.quit()

    # ------------------------------------------------------------------------------------------ handlers
    def _yielded(self, value: Any) -> None:
        if self.worker is not None and self._on_yield is not None:
            self._on_yield(value)

    def _returned(self, value: Any) -> None:
        if self._on_return is not None:
            self._on_return(value)

    def _on_progress(self, done: int, total: int) -> None:
        if self.worker is None:
            return  # arrived after the end
        now = time.monotonic()
        if self.state == JobState.PREPARING:
            self.state = JobState.RUNNING
        if self._first is None:
            self._first = (now, done)  # the ETA leaves out the preparation before the first report
        self.bar.setRange(0, max(total, 1))
        self.bar.setValue(min(done, total))
        text = f"{done}/{total} {self.unit}s"
        t_first, d_first = self._first
        if done > d_first and total > done:
            left = (now - t_first) / (done - d_first) * (total - done)
            text += f", about {format_duration(left)} left"
        self.bar.setFormat(text)

    def _tick(self) -> None:
        if self.worker is not None and self._first is None:
            self.bar.setFormat(f"{self.preparing_text}... {format_duration(time.monotonic() - self._t0)}")

    def _on_error(self, exc: Exception) -> None:
        message = str(exc) if isinstance(exc, SIAError) else f"{type(exc).__name__}: {exc}"
        self.state, self.error = JobState.FAILED, message
        show_error(f"SIA: {message}")
        self.set_status(f"error: {message}")

    def _on_finished(self) -> None:
        worker, self.worker = self.worker, None
        self._clock.stop()
        self.bar.setVisible(False)
        self.start_button.setEnabled(True)
        if self.stop_button is not None:
            self.stop_button.setEnabled(False)
        if self.state != JobState.FAILED:
            stopped = worker is not None and worker.abort_requested
            self.state = JobState.STOPPED if stopped else JobState.DONE
        if self._on_end is not None:
            self._on_end(self.state)
        self.ended.emit(self.state)
