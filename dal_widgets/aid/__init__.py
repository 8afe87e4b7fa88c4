"""dal_widgets.aid layer."""
