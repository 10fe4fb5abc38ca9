"""tickgate: spends a DhanHQ account's live-feed capacity on the instruments that matter.

Layers, bottom up: ``dhan`` (wire protocol, client, simulator), ``instruments`` (scrip master registry),
``planner`` (pure subscription state machine), ``chains`` (ATM engine), ``store`` (persistence),
``api`` / ``web`` (REST, push, dashboard).
"""

__version__ = "0.1.0"
