"""Every tooltip and fixed user-facing text of the SIA widget, in one place (micro-sam's ``_tooltips.py``)."""

from __future__ import annotations

TOOLTIPS: dict[str, str] = {
    # Images
    "source_layers": "Work on the image layers already open in napari (File > Open, drag and drop).",
    "source_folder": "Work on a folder of patches or regions (PNG, JPEG, TIFF/OME-TIFF). Labels are saved in "
    "sia_labels.csv inside that folder.",
    "folder": "Folder of H&E images; sub-folders are included, SIA's own sia_masks/, sia_pseudo/ and "
    "sia_exports/ are not.",
    "browse_folder": "Choose the image folder.",
    "image": "The current image. [labelled]: has image-level labels; [corrected]: has a saved correction. "
    "The view, the selection and the Inspect status follow it.",
    "prev": "Previous image (the layers of this one are removed, hidden or kept: see Inspect).",
    "next": "Next image (the layers of this one are removed, hidden or kept: see Inspect).",
    # Classes
    "class_preset": "Class names and colours of a public dataset, or 'custom' to type your own. Custom "
    "classes are saved as dataset.yaml beside the images, so the command line uses the same ones.",
    "edit_classes": "Show the class table: names, colours, add or remove classes.",
    "class_table": "Class names and colours. Each row is headed by the label value the class paints (napari's "
    "label box shows the same number). Double-click a name to edit it; click a colour to change it. Files keep "
    "these colours; on screen dark colours are brightened so they show over H&E.",
    "add_class": "Add a class (switches to custom classes).",
    "remove_class": "Remove the last class (switches to custom classes).",
    # Image labels
    "labels": "Tick every tissue class present in the current image. Saved at once to sia_labels.csv beside "
    "the images (the file the sia-core command line trains from too).",
    # Model
    "model": "Trained SIA model: a run folder (uses best.safetensors, else last.safetensors) or a "
    ".safetensors file. Used by Inspect and Pseudo-labels, and as the start of a fine-tune.",
    "browse_run": "Choose a run folder.",
    "browse_weights": "Choose a .safetensors weights file.",
    "device": "Where the model runs: auto (a CUDA GPU when there is one), cpu, or cuda.",
    # Train
    "train_preset": "cpu: small model that trains in minutes on a laptop; paper: the paper's ViT-B/16 "
    "setting (needs a GPU); test: a tiny model to try the workflow in seconds.",
    "iterations": "Number of training steps.",
    "start_from": "Train a new model from scratch, or fine-tune the model chosen above (same classes).",
    "run_dir": "Folder for the new run (config.yaml, weights, log). Empty: a new folder sia_runs/run-<time> "
    "beside the images. An existing run is never overwritten without asking.",
    "browse_run_dir": "Choose where the run is written.",
    "train": "Train on every labelled image (corrected masks in sia_masks/ are used as pixel supervision). "
    "napari stays usable while it runs.",
    "stop_train": "Stop after the current step; the last checkpoint is kept (last.safetensors).",
    "cli": "The sia-core command that trains exactly the same way from a terminal or a cluster.",
    "copy_cli": "Copy the command to the clipboard.",
    # Inspect
    "inspect_class": "Which classes get map layers: the classes present in the image, or one class.",
    "other_layers": "What happens to an image's layers when you move to another image: remove them (a mask "
    "with unsaved paint is asked about), hide them, or keep them as they are.",
    "inspect": "Run the model on the current image. Shown: its mask as an editable Labels layer 'mask (image)' - "
    "the refined mask of the classes ticked, or, with none ticked, the model's own segmentation. Added hidden "
    "(grey, 0..1, with a colour bar): the CAM, inhibition, activation and RSM maps, named class first. Running "
    "it again replaces them.",
    "paint_class": "The class the brush paints on this image's mask (sets napari's label and the paint tool). "
    "'erase' marks pixels unlabelled: they are not trained on.",
    # Pseudo-labels
    "pseudo_out": "Where pseudo-masks go: beside each image in sia_pseudo/, or one chosen folder.",
    "pseudo": "Write a pseudo-mask (palette PNG) for every labelled image.",
    "stop_pseudo": "Stop after the current image; masks already written stay.",
    "show_pseudo": "Open the current image's pseudo-mask as an editable mask of this image (correct it, then "
    "Save correction).",
    # Masks
    "export_format": "File format of the exported mask. GeoJSON opens in QuPath (File > Import objects).",
    "export": "Save the current image's mask (suggested: sia_exports/<name>_mask.<ext> beside the images, "
    "which the image list skips). Only a mask of the current image is exported.",
    "save_correction": "Save this image's mask as its correction (sia_masks/<name>.png). The next training "
    "uses it as pixel supervision instead of the pseudo-label; unlabelled (erased) pixels are not trained on. "
    "Only a mask of the current image is saved, never one of another image.",
    "open_mask": "Open a mask file (TIFF, PNG, OME-Zarr, GeoJSON) as a Labels layer of the current image.",
    # Whole slide
    "slide": "A whole-slide image (TIFF / BigTIFF / OME-TIFF / SVS), segmented tile by tile at the model's "
    "resolution with bounded memory.",
    "browse_slide": "Choose the slide.",
    "slide_out": "The OME-Zarr result (label pyramid, QuPath GeoJSON beside it). An unfinished one is "
    "resumed; a finished one is replaced only after asking.",
    "predict_slide": "Segment the slide in the background, then show the labels over the slide (multiscale).",
    "stop_slide": "Stop after the current batch; run again to resume where it stopped.",
}

EXPORT_FORMATS: dict[str, str] = {
    "TIFF (.tif)": ".tif",
    "PNG, palette (.png)": ".png",
    "OME-Zarr (.ome.zarr)": ".ome.zarr",
    "QuPath GeoJSON (.geojson)": ".geojson",
}
"""Export choices shown in the widget -> file extension."""

CUSTOM = "custom"
PRESENT_CLASSES = "present classes"
PSEUDO_BESIDE = "beside images (sia_pseudo/)"
PSEUDO_FOLDER = "chosen folder..."
