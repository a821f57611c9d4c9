"""The blueprints the dashboard's pages need beyond the core areas."""

from api.blueprints import account, event_stream, experiment_days, retrain

CONSOLE_BLUEPRINTS = [account.bp, event_stream.bp, experiment_days.bp, retrain.bp]
