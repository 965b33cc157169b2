"""Node providers: where the provisioner gets nodes from (``base.NodeProvider``)."""
