"""The controller: validates commands, assigns revisions, persists apps and their history,
publishes each app's desired state (retained) and drives rolling updates and canaries."""
