"""Output: mp4 files, ffconcat playlists and the live channel."""
