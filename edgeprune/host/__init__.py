"""The laptop side of edgeprune: may import TensorFlow, matplotlib, paramiko and pyserial."""
