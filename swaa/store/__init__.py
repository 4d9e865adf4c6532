"""Result storage shared by every long run: resumable keyed rows, fingerprints of what produced them, and the
one-writer folder lock."""
