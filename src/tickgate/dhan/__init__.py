"""Everything that speaks Dhan: the wire protocol (pure), the feed client and the simulator."""
