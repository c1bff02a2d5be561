"""Operations (issue 17): metrics, alarms, late-input expectations, partner notices, and what
the CLI tells the operator about each upload."""
