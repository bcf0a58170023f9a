"""The faust-streaming app of the retrain service: triggers in, jobs out.

- agent on ``monitor.alerts``: a firing alert of a kind in ``retrain_alert_kinds`` about a
  champion becomes a request (``request_id`` ``alert:<alert_id>``, so a replayed alert is one
  request) on ``retrain.requests``, keyed by model;
- agent on ``retrain.requests``: admission (duplicate, busy, cooldown — see ``TriggerGate``),
  then the job runs in a worker thread;
- ``@app.crontab(retrain_schedule, on_leader=True)``: one request per champion model;
- ``@app.timer(retrain_poll_seconds, on_leader=True)``: the champion watch (rollbacks).

Requests are keyed by model, and the group gives each partition to one worker; since a
partition can change hands in the middle of a job, each job (and each rollback) also holds its
model's lease in Redis (``lease``), so with several replicas exactly one acts on a model at a
time; the leader alone runs the schedule and the watch.

State: no faust tables. The coordinator's state is small and already on topics — the
gate and interrupted jobs come from ``retrain.jobs``, the registry from ``model.events`` — so
it is rebuilt from them on start, and the app's store is ``memory://`` with no changelog topics
(the embedded broker's memory storage would lose changelogs on restart anyway).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import faust

from ..runtime import topics
from ..runtime.errors import DecodeError
from ..runtime.metrics import ServiceEndpoint
from ..runtime.serde import EventDecoder
from ..runtime.settings import Settings
from .coordinator import Coordinator
from .jobs import RetrainRequest, now_ms, send_request

__all__ = ["RetrainApp", "alert_request"]

log = logging.getLogger(__name__)


def alert_request(alert: dict[str, Any], kinds: list[str]) -> RetrainRequest | None:
    """The retraining request a ``monitor.alerts`` record asks for, if any."""
    if alert.get("state", "firing") != "firing" or alert.get("kind") not in kinds:
        return None
    if alert.get("role") not in (None, "champion"):
        return None  # a challenger's alert is the coordinator's own business, not a trigger
    model, alert_id = alert.get("model"), alert.get("alert_id")
    if not isinstance(model, str) or not isinstance(alert_id, str):
        return None
    return RetrainRequest(
        request_id=f"alert:{alert_id}", model=model, requested_by="retrain",
        requested_at=now_ms(), reason=str(alert.get("message") or alert.get("kind")),
        alert_id=alert_id,
    )


class RetrainApp:
    """The faust app and the coordinator it drives."""

    def __init__(self, settings: Settings, coordinator: Coordinator | None = None) -> None:
        self.settings = settings
        self.coordinator = coordinator or Coordinator(settings)
        self.ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.app = faust.App(
            f"{settings.topic_prefix}modelstream-retrain",
            broker=[f"kafka://{h}" for h in (settings.kafka_bootstrap or "").split(",")],
            broker_credentials=_credentials(settings),
            store="memory://",
            web_enabled=False,
            datadir=str(settings.data_dir / "retrain"),
            topic_partitions=1,
            topic_allow_declare=False,
            # As the data plane's clients: quick group joins on the embedded broker.
            broker_session_timeout=6.0,
            broker_heartbeat_interval=1.0,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
        )
        self._wire()

    def _wire(self) -> None:
        s, app, coord = self.settings, self.app, self.coordinator
        requests = app.topic(s.topics.retrain_requests, value_serializer="raw",
                             key_serializer="raw")
        alerts = app.topic(s.topics.monitor_alerts, value_serializer="raw", key_serializer="raw")
        request_decoder = EventDecoder(topics.RETRAIN_REQUESTS, max_bytes=1 << 20,
                                       registry_url=s.schema_registry_url)
        alert_decoder = EventDecoder(topics.MONITOR_ALERTS, max_bytes=1 << 20,
                                     registry_url=s.schema_registry_url)

        @app.task
        async def recover() -> None:
            interrupted = await asyncio.to_thread(coord.recover)
            for job in interrupted:  # each waits for its model's lease, then resumes or fails
                self._spawn(coord.adopt, job)
            self.ready.set()
            log.info("retrain ready: %d interrupted job(s) to adopt", len(interrupted))

        @app.agent(requests, name="retrain-requests")
        async def on_request(stream: Any) -> None:
            async for value in stream:
                try:
                    request = RetrainRequest.from_record(request_decoder.decode(value))
                except DecodeError as exc:
                    log.warning("retrain.requests: skipped a record: %s", exc)
                    continue
                await self.ready.wait()
                job = await asyncio.to_thread(coord.admit, request)
                if job is not None:
                    self._spawn(coord.run_job, job, request, False)

        @app.agent(alerts, name="retrain-alerts")
        async def on_alert(stream: Any) -> None:
            async for value in stream:
                try:
                    alert = alert_decoder.decode(value)
                except DecodeError as exc:
                    log.warning("monitor.alerts: skipped a record: %s", exc)
                    continue
                request = alert_request(alert, s.retrain_alert_kinds)
                if request is not None:
                    log.info("alert %s on %s: requesting a retrain", request.alert_id,
                             request.model)
                    await asyncio.to_thread(send_request, s, request)

        @app.timer(s.retrain_poll_seconds, on_leader=True, name="retrain-watch")
        async def watch() -> None:
            await self.ready.wait()
            try:
                await asyncio.to_thread(coord.watch.tick)
            except Exception:  # a broker hiccup: the next tick tries again
                log.exception("champion watch failed; retrying on the next tick")

        if s.retrain_schedule:

            @app.crontab(s.retrain_schedule, on_leader=True)
            async def scheduled() -> None:
                await asyncio.to_thread(self._schedule)

        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def stop(app: Any, **_: Any) -> None:
            coord.stopping.set()

    def _schedule(self) -> None:
        from ..registry import read_state

        state = read_state(self.settings)
        minute = now_ms() // 60_000 * 60_000
        for name, record in sorted(state.models.items()):
            if record.champion is None:
                continue
            send_request(self.settings, RetrainRequest(
                request_id=f"schedule:{name}:{minute}", model=name, requested_by="schedule",
                requested_at=now_ms(), reason=f"schedule {self.settings.retrain_schedule}",
            ))

    def _spawn(self, fn: Any, *args: Any) -> None:
        task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("a retraining worker failed: %r", exc, exc_info=exc)

    def run(self) -> None:
        """Run until SIGTERM/SIGINT, with /metrics, /healthz and /readyz."""
        endpoint = ServiceEndpoint(self.settings.metrics_host,
                                   self.settings.service_port("retrain"),
                                   lambda: {"ready": self.ready.is_set()})
        endpoint.start()
        log.info("retrain: metrics on :%d", endpoint.port)
        # The service's own logging (text or JSON, configured by run()) for faust's records too.
        worker = faust.Worker(self.app, quiet=True, loglevel=self.settings.log_level.lower(),
                              redirect_stdouts=False, override_logging=False)
        try:
            worker.execute_from_commandline()
        finally:
            self.coordinator.stopping.set()
            self.coordinator.watch.close()
            self.coordinator.leases.close()
            endpoint.stop()


def _credentials(settings: Settings) -> Any:
    protocol = (settings.kafka_security_protocol or "").upper()
    context = None
    if "SSL" in protocol:
        context = ssl.create_default_context(cafile=settings.kafka_ssl_ca_location)
    if "SASL" in protocol:
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
