"""Approval links: signed, expiring, single-use, bound to one job and one image.

The token (itsdangerous, timestamped) carries the job id, the image's SHA-256
and a nonce. The nonce is stored when the mail is sent and marked used in the
same transaction that records the decision, so a link works once and cannot
approve an image other than the one that was tested.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from rig.config import Secret
from rig.daemon.queue import AWAITING, Job, Queue

SALT = "rig-approval-v1"


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str


class Approvals:
    def __init__(
        self,
        key: Secret,
        queue: Queue,
        ttl: float,
        target: Callable[[Job], str] = lambda job: "",
    ) -> None:
        self._serializer = URLSafeTimedSerializer(key.reveal(), salt=SALT)
        self.queue = queue
        self.ttl = ttl
        self.target = target  # what approving a job publishes, in words

    def issue(self, job_id: int, sha256: str, target: str) -> str:
        """A new token for ``job_id``; its nonce is stored before the link leaves the rig.

        ``target`` ("REPO@TAG via ACTION") is signed in: a link approves publishing
        that release that way, and nothing else.
        """
        nonce = secrets.token_urlsafe(16)
        self.queue.add_nonce(job_id, nonce)
        return self._serializer.dumps(
            {"job": job_id, "sha256": sha256, "nonce": nonce, "publish": target}
        )

    def sign(self, data: dict) -> str:
        """Sign arbitrary claims (tests forge near-valid tokens with this)."""
        return self._serializer.dumps(data)

    def check(self, token: str) -> tuple[Job, dict] | Refusal:
        """The job a token may decide, or why not. Changes nothing (GET is safe)."""
        try:
            claims = self._serializer.loads(token, max_age=self.ttl)
        except SignatureExpired:
            return Refusal(410, "this approval link has expired")
        except BadSignature:
            return Refusal(403, "this approval link is not valid")
        if (
            not isinstance(claims, dict)
            or not {"job", "sha256", "nonce", "publish"} <= claims.keys()
            or not isinstance(claims["job"], int)
        ):
            return Refusal(403, "this approval link is not valid")
        job = self.queue.get(claims["job"])
        if job is None:
            return Refusal(404, "no such job")
        if job.image_sha256 != claims["sha256"]:
            return Refusal(409, "this link was issued for a different image")
        row = self.queue.nonce(str(claims["nonce"]))
        if row is None or row["job_id"] != job.id:
            return Refusal(403, "this approval link is not valid")
        if row["used_at"] is not None:
            return Refusal(409, f"this link was already used ({row['used_for']})")
        if job.state != AWAITING:
            return Refusal(409, f"the job is {job.state}, not awaiting approval")
        if claims["publish"] != self.target(job):
            return Refusal(409, "what this link would publish has changed since it was mailed")
        return job, claims

    def decide(self, token: str, decision: str) -> Job | Refusal:
        """Use the link: approve or reject, atomically with marking the nonce used."""
        checked = self.check(token)
        if isinstance(checked, Refusal):
            return checked
        job, claims = checked
        if not self.queue.decide(job.id, claims["nonce"], claims["sha256"], decision):
            return Refusal(409, "this link was already used or the job moved on")
        return self.queue.get(job.id)  # type: ignore[return-value]
