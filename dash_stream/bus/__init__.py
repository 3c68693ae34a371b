"""Event buses: the narrow seam between serving and storage (DESIGN.md "The bus")."""
