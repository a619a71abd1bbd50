"""What an agent is: prompts, output types, the tool catalogue, the stakes policy."""
