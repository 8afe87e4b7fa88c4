"""dal_widgets.cochlea layer."""
