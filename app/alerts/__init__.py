"""Alerts: ``rules`` parses the TOML rule file and ``rule_file`` edits it, ``engine`` evaluates
the rules over the live series (pending → firing → resolved), ``notify`` delivers what changed
(each a ``transition``) to the sinks (desktop, tray, webhook), ``history`` reads past alert
events. Nothing here imports Qt."""
