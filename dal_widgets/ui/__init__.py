"""dal_widgets.ui layer."""
