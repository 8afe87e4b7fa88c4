"""dal_widgets.hearing layer."""
