//! netns (being written)
