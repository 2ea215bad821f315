"""GNN node classification on the engine: Planetoid data, GCN/GAT/GraphSAGE/APPNP, a neighbour sampler."""
