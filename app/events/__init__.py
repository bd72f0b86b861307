"""Order events (issue 20): every audit row a caller may see, in commit order, resumable."""
