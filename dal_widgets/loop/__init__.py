"""dal_widgets.loop layer."""
