"""Result storage shared by every long run: resumable keyed rows, fingerprints of what produced them, the one-writer
folder lock, and JSON files read with errors that name the line."""
