"""torch.optim rebuilt on gradxform (see issue: torch_compat)."""
