"""Everything LFADS writes into lfads_save_dir, with the original names and formats (reference §6-§7)."""
