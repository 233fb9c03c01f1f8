"""Starting pending runs: on this host's devices, claimed host-wide, or handed to a batch system.

A run is started only inside the host-wide claim transaction, by a supervisor that must first take
the run's lock (and re-check its markers under it); the claim is recorded before the supervisor is
told to go. Runs that cannot start are blocked (with the reason, said once) or looked at again later.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

from runqueue.candidates import Candidate, sift_pending
from runqueue.devices.attribution import attribute_processes
from runqueue.devices.claims import Claim, ClaimTransaction
from runqueue.devices.errors import ClaimError, ClaimsBusy, InventoryError
from runqueue.devices.model import Device, Inventory
from runqueue.devices.nvml import without_retry_note
from runqueue.devices.placement import (
    PlacementPolicy,
    PlacementRequest,
    free_memory_mb,
    never_fits,
    place,
    place_with_oom_fallback,
    provisional_claim,
    why_not_placed,
)
from runqueue.diskspace import disk_is_full
from runqueue.durations import format_duration
from runqueue.errors import without_fix
from runqueue.executors.base import PendingStart, RunHandle
from runqueue.layout import RESOURCES_FILE
from runqueue.logtail import LogTail
from runqueue.oversight import Oversight, overdue_at
from runqueue.queue_parts import QueuePart, QueueParts
from runqueue.runstate import Reason, RunState
from runqueue.supervisor_spec import SupervisorSpec
from runqueue.tracked import TrackedRun

MAX_CRASHES = 3  # supervisors that end without an outcome (or fail to start) before a run is blocked
_MAINTENANCE_RETRY_S = 1.0  # a run whose inputs lfads-manager rewrites: tried again this soon
_REPLY_TIMEOUT_S = 30.0
_BLOCKED_START_RECHECK_S = 60.0
_WAITING_NOTE_EVERY_S = 60.0
_SUBMIT_BATCH = 50  # runs handed to a batch system per loop turn (signals are looked at in between)


class Placer(QueuePart):
    """Places pending runs and starts their supervisors, a few rounds per turn of the loop.

    `dirty`: something changed that may allow a placement (a run ended or appeared, a block
    lifted); without it, placement waits for `next_retry` or a back-off coming due."""

    def __init__(
        self,
        parts: QueueParts,
        *,
        inventory: Inventory,
        policy: PlacementPolicy,
        queue_id: str,
        oversight: Oversight,
        start_watching: Callable[[TrackedRun, RunHandle], None],
        tick: Callable[[], None],
    ) -> None:
        super().__init__(parts)
        self.inventory = inventory
        self.policy = policy
        self.queue_id = queue_id
        self.oversight = oversight
        self.start_watching = start_watching
        self.tick = tick  # the loop's heartbeat (systemd's watchdog), fed between slow launches
        self.dirty = True
        self.next_retry: float | None = None  # runs wait for a device that may free up by itself
        self.next_waiting_note = 0.0
        self.waiting_for_manager: set[Path] = set()  # runs whose wait for lfads-manager was announced
        self.last_devices: tuple[Device, ...] = ()
        self.inventory_status = ""
        # `run` (not --watch) cannot place anything and nothing runs: waiting would be forever.
        self.cannot_place: str | None = None
        # Why no run can be placed right now (the claims directory, the inventory), for the status line:
        # a service whose placing is stuck must not look healthy to `systemctl status`.
        self.placing_paused: str | None = None

    def place_and_start(self) -> None:
        if self.next_retry is not None and time.monotonic() >= self.next_retry:
            self.next_retry = None
            self.dirty = True
        if not self.dirty and not self._retry_due():
            return
        for _round in range(5):  # another round when a supervisor found its run taken meanwhile
            if not self._place_round():
                break

    def block(self, run: TrackedRun, reason: str, *, recheck: bool, event: str, recheck_after_s: float = 0.0) -> None:
        """Place the run no more, and say why (`recheck`: the reason may go away by itself)."""
        run.blocked = reason
        run.recheck_block = recheck
        run.recheck_after = time.monotonic() + recheck_after_s
        if reason != run.last_block_message:  # a re-check that finds the same problem stays quiet
            run.last_block_message = reason
            self.console.event(f"[{run.name}] {event}")

    def waits_for_space(self, run: TrackedRun, what: str, event: str = "stopped") -> bool:
        """On a full disk, block the run until there is space (rescans re-check it); True if so."""
        if not disk_is_full(run.paths.root):
            return False
        reason = f"the disk of {run.paths.root} is full, so {what}; free space there (the run goes again once there is some)"
        self.block(run, reason, recheck=True, event=f"{event}: {reason}")
        run.needs_space = True
        return True

    def _look_again_in(self, seconds: float) -> None:
        """Place again after `seconds`, or sooner when a sooner look is planned already."""
        due = time.monotonic() + seconds
        self.next_retry = due if self.next_retry is None else min(self.next_retry, due)

    def _retry_due(self) -> bool:
        wall = time.time()
        return any(
            run.retry_after is not None and run.retry_after <= wall and run.state == RunState.PENDING and run.blocked is None
            for run in self.runs.values()
        )

    # ================================================================ rounds
    def _place_round(self) -> bool:
        """Place and start what fits; True when another round may place more."""
        self.dirty = False
        batch_device = self.executor.placement_device()
        if batch_device is not None:
            return self._submit_round(batch_device)
        page = self._sift_limit()
        candidates = self._candidates(page)
        if not candidates:
            return False
        try:
            with self.claims.transaction() as txn:
                self.cannot_place = None  # the claims directory works (again)
                reading = self.inventory.read()
                self._note_inventory(reading.status, reading.problems)
                self.last_devices = reading.devices
                if reading.paused:
                    # GPUs exist but cannot be read (e.g. driver upgraded under us): place nothing, look again.
                    self.placing_paused = without_fix(reading.status)
                    self._look_again_in(self.options.poll_interval_s)
                    return False
                self.placing_paused = None
                if not reading.devices and not self.options.watch:
                    # No GPU found and no CPU slots (--cpu-slots 0): a batch run would wait forever.
                    self.cannot_place = (f"no device to run on ({without_retry_note(reading.status)}); see `runqueue gpus`,"
                                         " or give --cpu-slots 1 or more")
                    return False
                live = txn.live_claims()
                # A run's own processes that left its session are its own, not foreign.
                reading = dataclasses.replace(reading, devices=attribute_processes(reading.devices, live))
                placements = self._decide(candidates, reading.devices, live)
                while not placements and len(candidates) == page and self._room_left(reading.devices, live):
                    # None of this page fits, yet a device has room: runs further on may fit it.
                    later = self._candidates(page, after=candidates[-1].run.path)
                    if not later:
                        break
                    candidates = later
                    placements = self._decide(candidates, reading.devices, live)
                if not placements:
                    self._note_waiting(candidates, reading.devices, live)
                    # Foreign processes end and NVML memory frees without any event of ours:
                    # look again after a while.
                    self._look_again_in(self.options.poll_interval_s)
                    return False
                return self._start(placements, live, txn)
        except (InventoryError, ClaimError) as error:
            self.console.event_once(str(error))
            if not isinstance(error, ClaimsBusy):
                self.placing_paused = without_fix(str(error))
            if isinstance(error, ClaimError) and not isinstance(error, ClaimsBusy) and not self.options.watch:
                # A claims directory that is no directory or not writable does not mend itself; a
                # watching queue keeps trying (a service outlives the fix), a batch one stops.
                self.cannot_place = str(error)
            self._look_again_in(self.options.poll_interval_s)
            return False

    def _submit_round(self, device: Device) -> bool:
        """A batch system places the runs: hand it every candidate (up to the executor's capacity)."""
        watched = sum(1 for run in self.runs.values() if run.handle is not None)
        room = self.executor.capacity(watched)
        batch = _SUBMIT_BATCH if room is None else min(room, _SUBMIT_BATCH)
        if batch <= 0:
            return False
        candidates = self._candidates(limit=batch)
        if not candidates:
            return False
        again = self._start([(candidate, device) for candidate in candidates], [], None)
        if len(candidates) == batch and self.next_retry is None:
            self.dirty = True  # more next turn, after a look at signals and ended runs
        return again

    # ================================================================ what may start, and where
    def _sift_limit(self) -> int:
        """Candidates looked at per page: enough to fill every slot several times over."""
        return 4 * max(1, len(self.last_devices) or 1) * self.options.max_per_gpu + 16

    def _room_left(self, devices: tuple[Device, ...], live: list[Claim]) -> bool:
        """Whether some device would take a run that needs no memory (a free slot, no foreign block)."""
        return bool(place([PlacementRequest(run_dir="", memory_mb=0)], devices, live, self.policy))

    def _candidates(self, limit: int | None = None, after: Path | None = None) -> list[Candidate]:
        """Pending runs that may start now, in path order, fresh from disk (another queue may have moved)."""
        sifted = sift_pending(
            self.runs.values(),
            limit=limit or self._sift_limit(),
            memory_per_run=self.options.memory_per_run,
            time_limit_s=self.options.time_limit_s,
            submitted=self.executor.submitted,
            after=after,
        )
        if sifted.maintained:
            self._look_again_in(_MAINTENANCE_RETRY_S)
        if sifted.settles_at is not None:  # a train script still being written: look again once it has settled
            self._look_again_in(max(0.0, sifted.settles_at - time.time()) + 0.01)
        self._announce_maintenance(sifted.maintained, [candidate.run for candidate in sifted.ready])
        for run in sifted.elsewhere:
            self.oversight.watch_running_elsewhere(run)
        for run, error in sifted.refused:
            self.block(run, error, recheck=True, event=f"not started: {error}")
        return sifted.ready

    def _announce_maintenance(self, held: list[TrackedRun], ready: list[TrackedRun]) -> None:
        """Say once when a run starts waiting for lfads-manager, so a quiet console is explained."""
        for run in held:
            if run.path not in self.waiting_for_manager:
                self.console.event(f"[{run.name}] waiting: lfads-manager is rewriting its inputs; it starts when that ends")
        self.waiting_for_manager.difference_update(run.path for run in ready)
        self.waiting_for_manager.update(run.path for run in held)

    def _decide(self, candidates: list[Candidate], devices: tuple[Device, ...], live: list[Claim]) -> list[tuple[Candidate, Device]]:
        by_dir = {candidate.request.run_dir: candidate for candidate in candidates}
        placed: list[tuple[Candidate, Device]] = []
        for request, device in place_with_oom_fallback([c.request for c in candidates], devices, live, self.policy):
            candidate = by_dir[request.run_dir]
            candidate.request = request  # an out-of-memory retry may have been relaxed to an ordinary one
            placed.append((candidate, device))
        # A request nothing could ever hold (more memory than any device has) would wait forever.
        if not placed:
            for candidate in candidates:
                largest = never_fits(candidate.request, devices, self.options.max_per_gpu)
                if largest is not None:
                    reason = (
                        f"it declares {candidate.request.memory_mb} MB and the largest device has {largest} MB; "
                        f"lower memory_mb in {candidate.run.paths.resources.name} or pass a smaller --memory-per-run"
                    )
                    self.block(candidate.run, reason, recheck=True, event=f"cannot be placed: {reason}")
        return placed

    # ================================================================ starting
    def _start(self, placements: list[tuple[Candidate, Device]], live: list[Claim], txn: ClaimTransaction | None) -> bool:
        """Launch supervisors, wait until each holds its run lock, claim, then let them go.

        `txn` None: a batch system places the runs (no host-wide claim; "launched" means submitted)."""
        launches: list[tuple[Candidate, Device, PendingStart]] = []
        charged = list(live)
        skipped = False  # its device may take another run: place again
        for candidate, device in placements:
            # As `runqueue status` says: nothing (a lock, a log line, a checkpoint) would fit.
            if self.waits_for_space(candidate.run, "it is not started", event="waits"):
                skipped = True
                continue
            spec = SupervisorSpec(
                run_dir=candidate.request.run_dir,
                device_uuid=device.uuid,
                device_name=device.name,
                device_env=device.job_environment(),
                device_index=device.listed_index if txn is not None else None,  # a batch job's GPU is its own
                max_attempts=self.options.retries + 1,
                retry_backoff_s=self.options.retry_backoff_s,
                time_limit_s=candidate.resources.time_limit_s,
                kill_grace_s=self.options.kill_grace_s,
                queue_id=self.queue_id,
                device_free_mb=free_memory_mb(device, charged),
                claims_dir=None if txn is None else str(self.claims.directory),
            )
            charged.append(provisional_claim(candidate.request, device, self.queue_id))
            offset = _file_size(candidate.run.paths.out_log)
            pending = self.executor.launch(spec)
            self.tick()  # a launch may be a slow sbatch: keep systemd's watchdog fed between them
            launches.append((candidate, device, pending))
            candidate.run.tail = None if self.options.quiet else LogTail(candidate.run.paths.out_log, offset)
        self.executor.await_replies([pending for _, _, pending in launches], _REPLY_TIMEOUT_S)
        again = skipped
        for candidate, device, pending in launches:
            run = candidate.run
            if not pending.started:
                self.executor.abandon(pending)
                run.tail = None
                again = again or pending.reply.get("status") != "deferred"
                self._not_started(run, pending)
                continue
            if txn is not None:
                pid = int(pending.reply["pid"])
                try:
                    txn.add(Claim(str(run.path), device.uuid, candidate.request.memory_mb, pid, pid, self.queue_id, time.time()))
                except ClaimError as error:
                    self.executor.abandon(pending)  # never run unclaimed
                    run.tail = None
                    self.console.event_once(str(error))
                    continue
            handle = self.executor.confirm(pending)
            tail = run.tail  # the one made before the launch: it begins where this attempt's output does
            self.start_watching(run, handle)
            run.tail = tail
            run.overdue_at = overdue_at(time.time(), candidate.resources.time_limit_s, self.options.kill_grace_s)
            run.ended_here = False
            attempt = pending.reply.get("attempt")
            resume = pending.reply.get("resume_step")
            more = f", resuming at {resume}" if resume else ""
            if pending.reply.get("supervisor_lost"):
                more += " (its last supervisor was lost: killed, crashed or the machine restarted)"
            limit = candidate.resources.time_limit_s
            if limit is not None and limit != self.options.time_limit_s:  # the run's runqueue.json set it: say so
                more += f", time limit {format_duration(limit)} (from its {RESOURCES_FILE})"
            where = self.executor.started_text(handle, device)
            self.console.event(f"[{run.name}] {where}, attempt {attempt}/{max(self.options.retries + 1, int(attempt or 1))}{more}")
        return again

    def _not_started(self, run: TrackedRun, pending: PendingStart) -> None:
        status = pending.reply.get("status")
        if status == "busy":
            self.oversight.watch_running_elsewhere(run)
        elif status == "finished":
            paths = run.paths
            run.state = RunState.DONE if os.path.lexists(paths.done_marker) else RunState.FAILED
        elif status == "deferred":
            # The batch system refused for now (controller down, submit limit): try again later,
            # without counting it against the run.
            self.console.event_once(str(pending.reply.get("message", "not submitted")))
            self._look_again_in(self.options.poll_interval_s)
        else:
            run.crashes += 1
            message = str(pending.reply.get("message", "unknown error"))
            if run.crashes >= MAX_CRASHES or pending.reply.get("reason") == Reason.FOLDER_VANISHED or pending.reply.get("final"):
                # A watching queue tries again now and then (the folder may have been fixed): one
                # supervisor start a minute, and silence while the problem stays the same.
                self.block(run, message, recheck=self.options.watch, event=f"could not start: {message}",
                           recheck_after_s=_BLOCKED_START_RECHECK_S)
            else:
                self.console.event(f"[{run.name}] could not start: {message}")
                self.dirty = True  # try again on the next turn, until it starts or is blocked

    # ================================================================ saying why nothing starts
    def _note_waiting(self, candidates: list[Candidate], devices: tuple[Device, ...], live: list[Claim]) -> None:
        """Say why nothing starts, now and then, so a queue never waits in silence."""
        if time.monotonic() < self.next_waiting_note or not candidates:
            return
        self.next_waiting_note = time.monotonic() + _WAITING_NOTE_EVERY_S
        running_here = any(run.handle is not None for run in self.runs.values())
        waiting = [candidate for candidate in candidates if candidate.run.blocked is None]
        if running_here or not waiting:
            return  # a run ending will make room; nothing surprising
        first = waiting[0]
        self.console.event(f"[{first.run.name}] {why_not_placed(first.request, devices, live, self.policy)}")

    def _note_inventory(self, status: str, problems: tuple[str, ...]) -> None:
        # The NVML retry countdown changes at every reading: it alone is no news.
        settled = without_retry_note(status)
        if settled != self.inventory_status:
            self.inventory_status = settled
            # A batch queue on a machine without a driver starts on the CPU at once: the countdown to
            # the next NVML attempt only matters to a watching queue (a driver installed meanwhile).
            self.console.event(f"devices: {status if self.options.watch else settled}")
        for problem in problems:
            self.console.event_once(problem)


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0

