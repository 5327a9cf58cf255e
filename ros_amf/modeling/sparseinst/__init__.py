"""SparseInst and AMF-SparseInst: encoder (PPM or SimAM-ASPP, FPN or Lite-BiFPN, FEM), Group-IAM decoder,
Hungarian matcher and loss, inference post-processing."""
