"""LR from HR: k-space and image-domain degradations with exact LR affines (DATA.md)."""
