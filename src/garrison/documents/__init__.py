"""Private documents: storage roots, parsing, a clearance-filtered hybrid index, retrieval with citations."""
