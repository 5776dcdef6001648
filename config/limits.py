"""The caps that keep every Redis key bounded, in one place.

Each Redis key snakepool writes is bounded by live data: a TTL, a cap, or an index
pruned on write (DESIGN.md §8). The numbers here are those caps; ``docs/redis-keys.md``
lists every key with its bound and its worst-case memory. The settings check
(:mod:`snakepool.config.rules`) holds ``MAX_MESSAGE_BYTES`` against them.
"""

from __future__ import annotations

__all__ = [
    "AUDIT_MAXLEN",
    "AUDIT_SUMMARY_COMMANDS",
    "DEAD_LETTER_TTL",
    "DELIVERY_HISTORY_TTL",
    "MAX_AUDIT_DETAILS_BYTES",
    "MAX_AUDIT_TEXT_CHARS",
    "MAX_DEAD_LETTERS",
    "MAX_DELIVERY_HISTORY",
    "MAX_METADATA_BYTES",
    "MAX_OVERRIDES",
    "MAX_PROGRAMS_PER_SESSION",
    "MAX_PROGRAM_BYTES",
    "MAX_SCHEDULE_STEPS",
    "MAX_SESSION_TTL",
    "MAX_V3_COMMANDS",
    "METRICS_WINDOW_SECONDS",
    "REDIS_MAX_BULK_BYTES",
    "SHADOW_COMMAND_CHARS",
    "SHADOW_DIFF_CHARS",
    "SHADOW_VALUE_MAX_BYTES",
]

# ------------------------------------------------------------------ sessions

#: Longest session TTL, in seconds (30 days).
MAX_SESSION_TTL = 30 * 24 * 3600
#: Largest session metadata object, as JSON bytes.
MAX_METADATA_BYTES = 64 * 1024
#: Largest program definition, as JSON bytes.
MAX_PROGRAM_BYTES = 256 * 1024
#: Programs one session may hold (so one session is at most ~256 MiB of definitions).
MAX_PROGRAMS_PER_SESSION = 1000

# ------------------------------------------------------------- rollout flags

#: Audit stream entries kept (exact: flag changes are rare, exact trimming is cheap).
AUDIT_MAXLEN = 10_000
#: Longest ``who`` / ``why`` kept in the flags and the audit stream (longer: cut).
MAX_AUDIT_TEXT_CHARS = 1000
#: Largest ``details`` of an audit entry, as JSON bytes (larger: replaced by its size).
MAX_AUDIT_DETAILS_BYTES = 8 * 1024
#: An audit entry's old/new V3 allow-list is listed up to this many commands, else
#: counted (as the per-session overrides always are).
AUDIT_SUMMARY_COMMANDS = 50
#: Per-session overrides kept in the flags.
MAX_OVERRIDES = 10_000
#: Commands the V3 allow-list may name.
MAX_V3_COMMANDS = 1000
#: Steps a promotion schedule may have.
MAX_SCHEDULE_STEPS = 100

#: Seconds the per-second lane metrics are kept
#: (``snakepool.tasks.rollout.metrics.WINDOW_TTL``): no windowed rate (breaker,
#: controller) can look further back.
METRICS_WINDOW_SECONDS = 600

# -------------------------------------------------------------------- shadow

#: Largest outcome a shadow record keeps whole, as JSON bytes. A larger one is kept as
#: its SHA-256 digest, size and first bytes (compared exactly, by digest).
SHADOW_VALUE_MAX_BYTES = 16 * 1024
#: Longest command name a shadow record or mismatch keeps.
SHADOW_COMMAND_CHARS = 128
#: Longest single difference a kept mismatch lists.
SHADOW_DIFF_CHARS = 500

# ------------------------------------------------- node deaths, dead letters

#: Deliveries of one request that ended with their node's death, remembered per task id
#: (also the largest ``POISON_THRESHOLD``: the count is the length of this history).
MAX_DELIVERY_HISTORY = 100
#: Seconds that history is kept after the last death it records (a request that killed
#: a node yesterday starts afresh): the results' lifetime, ``RESULT_EXPIRES``.
DELIVERY_HISTORY_TTL = 24 * 3600
#: Dead letters kept; past this the oldest is dropped (its caller already got
#: ``DeadLettered``). Each holds its whole message: at most ``MAX_MESSAGE_BYTES``.
MAX_DEAD_LETTERS = 200
#: Seconds a dead letter is kept for ``snakepool deadletter show|retry`` (7 days).
DEAD_LETTER_TTL = 7 * 24 * 3600

# --------------------------------------------------------------------- Redis

#: Redis's largest string (``proto-max-bulk-len``, 512 MiB by default): a result larger
#: than this cannot be stored by the result backend.
REDIS_MAX_BULK_BYTES = 512 * 1024 * 1024
