"""dal_widgets.audio layer."""
