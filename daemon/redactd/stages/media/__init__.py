"""Reading and writing media: type sniffing, image decode/encode, video.

``sniff`` decides the type from content, ``image`` decodes and re-encodes
still images with Pillow. Only ``video`` may import PyAV (``av``): each
external runtime is touched by exactly one module.
"""
