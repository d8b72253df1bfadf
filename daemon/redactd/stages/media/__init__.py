"""Reading and writing media: type sniffing, image decode/encode, video.

``sniff`` decides the type from content, ``image`` decodes and re-encodes
still images with Pillow. Only ``video`` and its parts (``video_input``,
``video_output``, ``video_audio``) may import PyAV (``av``): each external
runtime is touched by one part of the stage, loaded only for video.
"""
