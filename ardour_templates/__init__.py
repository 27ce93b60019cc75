"""ardour_templates."""
