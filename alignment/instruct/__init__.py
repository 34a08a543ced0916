"""The generated tasks: the instruction-following task with checkable answers (instructions, answers), the
quickstart's preference data (quicktask), and the degeneration checks (empty, echo, loop, too short)."""
