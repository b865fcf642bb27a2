"""The names ultralytics itself binds where a layer's name goes, in every release this tool was surveyed on.

A layer's name is imported into ``ultralytics.nn.modules`` and into ``nn/tasks.py``, so it must not be a name those
namespaces already hold: a class of ``nn/modules/*.py`` (``CBAM``, ``ChannelAttention``), a name ``nn/tasks.py`` or
``nn/modules/__init__.py`` binds (``Conv``, ``parse_model``, ``torch``) or a submodule of ``nn/modules`` (``conv``).
``apply --layer`` refuses such a name, and ``--force`` never takes over a class of one of these names (it is
ultralytics' own, not a fork's). The running target's own files are read too; this list is what tells ultralytics'
names from a fork's hand-pasted ones. Made with ``ast`` from the releases 8.0.98, 8.0.147, 8.0.200, 8.0.207,
8.0.239, 8.1.30, 8.1.47, 8.2.103, 8.3.52, 8.3.135, 8.3.150, 8.4.2 and 8.4.190 (tests/test_user_layers.py checks
it against every release the tests download).
"""

STOCK_NAMES = frozenset(
    {
        "__all__", "_get_clones", "_initialize_yolo_model", "_SafeLoad", "_temporary_modules_lock", "A2C2f", "AAttn",
        "ABlock", "AConv", "activation", "ADown", "AGLU", "AIFI", "annotations", "attempt_load_one_weight",
        "attempt_load_weights", "Attention", "autopad", "BaseModel", "bias_init_with_prob", "block",
        "BNContrastiveHead", "Bottleneck", "BottleneckCSP", "C1", "C2", "C2f", "C2fAttn", "C2fCIB", "C2fPSA", "C2PSA",
        "C3", "C3f", "C3Ghost", "C3k", "C3k2", "C3TR", "C3x", "CBAM", "CBFuse", "CBLinear", "ChannelAttention",
        "check_class_names", "check_file", "check_requirements", "check_suffix", "check_yaml", "CIB",
        "ClassificationModel", "Classify", "colorstr", "Concat", "contextlib", "ContrastiveHead", "Conv", "conv",
        "Conv2", "ConvTranspose", "deepcopy", "DEFAULT_CFG_DICT", "DEFAULT_CFG_KEYS", "DeformableTransformerDecoder",
        "DeformableTransformerDecoderLayer", "Depth", "DepthLoss26", "DepthModel", "Detect", "DetectionModel", "DFL",
        "DWConv", "DWConvTranspose2d", "E2EDetectLoss", "E2ELoss", "ELAN1", "emojis", "Ensemble",
        "feature_visualization", "Focus", "fuse_conv_and_bn", "fuse_deconv_and_bn", "GhostBottleneck", "GhostConv",
        "guess_model_scale", "guess_model_task", "head", "HGBlock", "HGStem", "ImagePoolingAttn", "importlib", "Index",
        "initialize_weights", "intersect_dicts", "inverse_sigmoid", "is_qat", "IterableSimpleNamespace", "LayerNorm2d",
        "LightConv", "linear_init", "linear_init_", "load_checkpoint", "LOGGER", "LRPCHead", "make_divisible",
        "MaxSigmoidAttnBlock", "MLP", "MLPBlock", "model_info", "MSDeformAttn", "multi_scale_deformable_attn_pytorch",
        "nn", "np", "OBB", "OBB26", "OBBModel", "parse_model", "Path", "pickle", "Pose", "Pose26", "PoseLoss26",
        "PoseModel", "Proto", "Proto26", "PSA", "PSABlock", "re", "RealNVP", "REMOTE_FILE_PREFIXES", "RepBottleneck",
        "RepC3", "RepConv", "RepCSP", "RepNCSPELAN4", "RepVGGDW", "Residual", "ResNetBlock", "ResNetLayer",
        "restore_qat", "RTDETRDecoder", "RTDETRDetectionModel", "SAFE_LOAD", "SafeClass", "SafeUnpickler", "SAVPE",
        "scale_img", "SCDown", "Segment", "Segment26", "SegmentationModel", "SegmentLoss26", "SemanticSegment",
        "SemanticSegmentationLoss", "SemanticSegmentationModel", "SETTINGS", "Silence", "smart_inference_mode",
        "SpatialAttention", "SPP", "SPPELAN", "SPPF", "SwiGLUFFN", "temporary_modules", "thop", "threading",
        "time_sync", "torch", "torch_load", "torch_safe_load", "TorchVision", "transformer", "TransformerBlock",
        "TransformerEncoderLayer", "TransformerLayer", "types", "utils", "v10Detect", "v8ClassificationLoss",
        "v8DetectionLoss", "v8OBBLoss", "v8PoseLoss", "v8SegmentationLoss", "WINDOWS", "WorldDetect", "WorldModel",
        "YAML", "yaml_load", "yaml_model_load", "YOLOEDetect", "YOLOEModel", "YOLOESegment", "YOLOESegment26",
        "YOLOESegModel"
    }
)
