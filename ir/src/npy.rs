//! Reading and writing NumPy `.npy` files (raw arrays: dtype, shape, bytes).
