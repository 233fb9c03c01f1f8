"""The LFADS Run Queue: finds pending run folders, places them on free GPUs, supervises them."""
